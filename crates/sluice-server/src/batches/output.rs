//! A batch's end: its results written out, in line order, as its output file (lines
//! answered 2xx) and error file (malformed lines and other answers), both through the files'
//! store with purpose `batch_output` and owned by the batch's owner; for a cancelled or
//! expired batch (or a forwarded one that failed), every line that never ran is in the error
//! file too (`batch_cancelled`, `batch_expired`, `batch_failed`). A file with no line is not
//! written (its id stays `null`). Then the batch takes its final status, and its results are
//! deleted.

use super::handle::Batches;
use super::input::{self, Lines, Read};
use super::line;
use sluice_store::batches::{Batch, BatchStatus, LineResult, Outcome};
use sluice_store::files::{NewFile, Purpose, Upload};
use sluice_store::StoreError;
use std::collections::HashSet;

/// Results read from the store at once.
const PAGE: usize = 500;

/// The two files being written.
struct Files<'a> {
    batches: &'a Batches,
    batch: &'a Batch,
    output: Option<Upload>,
    errors: Option<Upload>,
}

fn text(e: StoreError) -> String {
    e.to_string()
}

impl Files<'_> {
    /// Appends `result`'s line to its file.
    async fn write(&mut self, result: &LineResult) -> Result<(), String> {
        let slot = match result.outcome {
            Outcome::Completed => &mut self.output,
            Outcome::Failed => &mut self.errors,
        };
        if slot.is_none() {
            *slot = Some(self.batches.files.upload().await.map_err(text)?);
        }
        if let Some(upload) = slot {
            upload.write(result.text.as_bytes()).await.map_err(text)?;
            upload.write(b"\n").await.map_err(text)?;
        }
        Ok(())
    }

    /// Finishes a file that has lines; its id.
    async fn close(&self, upload: Option<Upload>, kind: &str) -> Result<Option<String>, String> {
        let Some(upload) = upload else {
            return Ok(None);
        };
        let new = NewFile {
            owner: self.batch.owner.clone(),
            purpose: Purpose::BatchOutput,
            filename: format!("{}_{kind}.jsonl", self.batch.id),
            expires_after: None,
        };
        Ok(Some(upload.finish(new).await.map_err(text)?.id))
    }
}

/// Writes the batch's files and ends it as `to`.
pub async fn finish(batches: &Batches, batch: &Batch, to: BatchStatus) -> Result<(), String> {
    let mut files = Files {
        batches,
        batch,
        output: None,
        errors: None,
    };
    let mut done = HashSet::new();
    let mut after = None;
    loop {
        let page = batches
            .store
            .results(&batch.id, after, PAGE)
            .await
            .map_err(text)?;
        for result in &page {
            files.write(result).await?;
            done.insert(result.line);
        }
        after = page.last().map(|r| r.line);
        if page.len() < PAGE {
            break;
        }
    }
    if let Some((code, message)) = not_run(to) {
        write_not_run(&mut files, &done, code, message).await?;
    }
    let (output, errors) = (files.output.take(), files.errors.take());
    let output_id = files.close(output, "output").await?;
    let error_id = files.close(errors, "error").await?;
    batches
        .store
        .finish(&batch.id, to, output_id, error_id)
        .await
        .map_err(text)
}

/// The error of a line that never ran, for a batch that ended as `to`.
fn not_run(to: BatchStatus) -> Option<(&'static str, &'static str)> {
    match to {
        BatchStatus::Cancelled => Some((
            "batch_cancelled",
            "This request was not run: the batch was cancelled.",
        )),
        BatchStatus::Expired => Some((
            "batch_expired",
            "This request could not be executed before the completion window expired.",
        )),
        BatchStatus::Failed => Some((
            "batch_failed",
            "This request was not run: the batch failed.",
        )),
        _ => None,
    }
}

/// The error lines of the input's lines without a result.
async fn write_not_run(
    files: &mut Files<'_>,
    done: &HashSet<u64>,
    code: &str,
    message: &str,
) -> Result<(), String> {
    let opened = files
        .batches
        .files
        .open(&files.batch.input_file_id, &files.batch.owner)
        .await
        .map_err(text)?;
    let Some((_, file)) = opened else {
        return Ok(());
    };
    let mut lines = Lines::new(file);
    let mut seen = HashSet::new();
    let endpoint = files.batch.endpoint.clone();
    while let Some(read) = lines.next(usize::MAX).await.map_err(|e| e.to_string())? {
        let Read::Text(number, text) = read else {
            continue;
        };
        let custom_id = input::parse(text, number, &endpoint, &mut seen)
            .ok()
            .map(|r| r.custom_id);
        if done.contains(&number) {
            continue;
        }
        let result = line::not_run(&files.batch.id, number, custom_id.as_deref(), code, message);
        files.write(&result).await?;
    }
    Ok(())
}
