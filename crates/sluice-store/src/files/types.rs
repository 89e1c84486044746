//! What the Files API stores about a file ([`FileObject`]), who owns it ([`Owner`]), what
//! it is for ([`Purpose`]), and the shape of a listing ([`ListQuery`], [`Page`]).

use std::fmt;

/// Most files a listing returns at once (OpenAI's bound for `limit`).
pub const MAX_LIST_LIMIT: usize = 10_000;

/// Who owns a file: every lookup is scoped to its owner, so another key's file is absent.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Owner {
    /// The master key, or anyone when the gateway has no master key.
    Master,
    /// A virtual key, by its id.
    Key(String),
}

impl Owner {
    /// The owner as stored: `""` for [`Owner::Master`], else the key's id.
    pub fn as_stored(&self) -> &str {
        match self {
            Self::Master => "",
            Self::Key(id) => id,
        }
    }

    /// The owner stored as `text`.
    pub fn from_stored(text: &str) -> Self {
        match text {
            "" => Self::Master,
            id => Self::Key(id.to_string()),
        }
    }
}

/// What a file is for, as OpenAI names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// `assistants`.
    Assistants,
    /// `batch`: the input of a batch (JSONL).
    Batch,
    /// `fine-tune` (JSONL).
    FineTune,
    /// `vision`: an image.
    Vision,
    /// `user_data`.
    UserData,
    /// `evals` (JSONL).
    Evals,
    /// `batch_output`: a batch's output or error file, written by sluice (never uploaded).
    BatchOutput,
}

impl Purpose {
    /// Every purpose, in OpenAI's order.
    pub const ALL: [Self; 7] = [
        Self::Assistants,
        Self::Batch,
        Self::FineTune,
        Self::Vision,
        Self::UserData,
        Self::Evals,
        Self::BatchOutput,
    ];

    /// The purpose named `text`.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == text)
    }

    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Assistants => "assistants",
            Self::Batch => "batch",
            Self::FineTune => "fine-tune",
            Self::Vision => "vision",
            Self::UserData => "user_data",
            Self::Evals => "evals",
            Self::BatchOutput => "batch_output",
        }
    }

    /// Whether clients may upload files of this purpose (`batch_output` is sluice's own).
    pub fn uploadable(self) -> bool {
        self != Self::BatchOutput
    }

    /// The file name extensions a file of this purpose may have (lower case, without the
    /// dot); empty: any.
    pub fn extensions(self) -> &'static [&'static str] {
        match self {
            Self::Batch | Self::FineTune | Self::Evals | Self::BatchOutput => &["jsonl"],
            Self::Vision => &["png", "jpg", "jpeg", "gif", "webp"],
            Self::Assistants | Self::UserData => &[
                "c", "cpp", "cs", "css", "csv", "doc", "docx", "go", "html", "java", "js", "json",
                "jsonl", "md", "pdf", "php", "pptx", "py", "rb", "sh", "tex", "ts", "txt", "xlsx",
                "xml",
            ],
        }
    }

    /// Whether a file named `filename` may have this purpose (by its extension).
    pub fn accepts(self, filename: &str) -> bool {
        let allowed = self.extensions();
        let Some((_, ext)) = filename.rsplit_once('.') else {
            return allowed.is_empty();
        };
        allowed.is_empty() || allowed.iter().any(|a| a.eq_ignore_ascii_case(ext))
    }
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A file's status (OpenAI's, deprecated there but still sent): sluice stores only whole
/// files, so every file it lists is `processed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileStatus {
    /// Stored whole.
    Processed,
}

impl FileStatus {
    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Processed => "processed",
        }
    }

    /// The status stored as `text` (anything else reads as processed: it is the only one).
    pub fn parse(_text: &str) -> Self {
        Self::Processed
    }
}

/// A stored file's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileObject {
    /// `file-` and 24 letters and digits.
    pub id: String,
    /// Who may see it.
    pub owner: Owner,
    /// What it is for.
    pub purpose: Purpose,
    /// The name it was uploaded with.
    pub filename: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// When it was stored, Unix seconds.
    pub created_at: u64,
    /// When it expires, Unix seconds: past it the file is absent.
    pub expires_at: Option<u64>,
    /// Always [`FileStatus::Processed`].
    pub status: FileStatus,
}

impl FileObject {
    /// Whether the file has expired at `now` (Unix seconds).
    pub fn expired(&self, now: u64) -> bool {
        self.expires_at.is_some_and(|e| e <= now)
    }
}

/// What a new file is: its owner, purpose, name and expiry; the store gives it its id,
/// size and creation time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFile {
    /// Who will own it.
    pub owner: Owner,
    /// What it is for.
    pub purpose: Purpose,
    /// Its name (metadata only: contents are stored under the id).
    pub filename: String,
    /// Seconds after its creation it expires (its `expires_at` is its `created_at` plus
    /// these, from one reading of the clock).
    pub expires_after: Option<u64>,
}

/// The order of a listing, by creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// Oldest first.
    Asc,
    /// Newest first (OpenAI's default).
    #[default]
    Desc,
}

impl Order {
    /// `asc` or `desc`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "asc" => Some(Self::Asc),
            "desc" => Some(Self::Desc),
            _ => None,
        }
    }
}

/// A listing's page: files after the cursor, at most `limit`, of one purpose or all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// The id of the last file of the previous page.
    pub after: Option<String>,
    /// Most files on the page, 1 to [`MAX_LIST_LIMIT`].
    pub limit: usize,
    /// Order by creation.
    pub order: Order,
    /// Only files of this purpose.
    pub purpose: Option<Purpose>,
}

impl Default for ListQuery {
    fn default() -> Self {
        Self {
            after: None,
            limit: MAX_LIST_LIMIT,
            order: Order::Desc,
            purpose: None,
        }
    }
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Page {
    /// The files, in the order asked for.
    pub files: Vec<FileObject>,
    /// Whether more follow.
    pub has_more: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposes_round_trip_and_check_extensions() {
        for p in Purpose::ALL {
            assert_eq!(Purpose::parse(p.as_str()), Some(p));
        }
        assert_eq!(Purpose::parse("nope"), None);
        assert!(Purpose::Batch.accepts("in.JSONL"));
        assert!(!Purpose::Batch.accepts("in.csv"));
        assert!(!Purpose::Batch.accepts("jsonl"));
        assert!(Purpose::Vision.accepts("cat.png"));
        assert!(!Purpose::Vision.accepts("cat.exe"));
        assert!(Purpose::UserData.accepts("notes.txt"));
        assert!(!Purpose::BatchOutput.uploadable());
        assert_eq!(Owner::from_stored(""), Owner::Master);
        assert_eq!(Owner::from_stored("key_1").as_stored(), "key_1");
    }
}
