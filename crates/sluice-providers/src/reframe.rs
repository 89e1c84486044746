//! The interface of a stream translation at the client's edge: a stream of OpenAI
//! `chat.completion.chunk` events re-framed, event by event, as another API's stream
//! (Anthropic's Messages events, the Responses API's events).

/// Re-frames OpenAI chunk events as another API's event stream.
pub trait Reframe {
    /// Feeds the `data` of one OpenAI SSE event (`[DONE]` included); appends the events
    /// it becomes to `out`.
    fn on_event(&mut self, data: &[u8], out: &mut Vec<u8>);

    /// Whether the stream has been closed.
    fn is_done(&self) -> bool;

    /// Closes a stream that ended without `[DONE]`; appends the closing events to `out`.
    fn finish_stream(&mut self, out: &mut Vec<u8>);

    /// The prompt's usage as the upstream counted it before its first content (a
    /// [`crate::chunks::ChunkWriter::prompt_usage`] comment); most protocols have no use
    /// for it.
    fn on_prompt_usage(&mut self, _usage: sluice_types::Usage) {}
}
