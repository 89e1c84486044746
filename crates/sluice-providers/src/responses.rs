//! Inbound Responses API: `POST /v1/responses` in OpenAI's Responses format, served by any
//! provider. The request becomes an OpenAI chat request (the gateway's own format, which
//! every provider translation speaks); the answer, whole or streamed, becomes a Responses
//! API `response` again.
//!
//! Format: OpenAI's API reference, "Responses" (create, the response object) and
//! "Streaming events"; the Chat Completions reference for the other side.
//!
//! What maps and how:
//! - `instructions` → a leading `system` message; `input` as a string → one `user` message;
//!   `input` items: `message` (roles `user`, `assistant`, `system`, `developer`; parts
//!   `input_text`/`output_text` → text, `refusal` → text, `input_image` → `image_url`,
//!   `input_file` → a chat `file` part), `function_call` → the assistant's `tool_calls`
//!   (consecutive calls and the assistant text before them form one assistant message),
//!   `function_call_output` → a `tool` message; `reasoning` items are accepted and not sent
//!   (chat has no field that carries reasoning back).
//! - `tools` (function tools) → chat `tools`; `tool_choice`, `parallel_tool_calls`,
//!   `temperature`, `top_p`, `user`, `service_tier`, `prompt_cache_key`,
//!   `safety_identifier` as they are; `max_output_tokens` → `max_tokens`;
//!   `reasoning.effort` → `reasoning_effort`; `text.format` `json_schema`/`json_object` →
//!   `response_format`; `text.verbosity` → `verbosity`.
//! - Back: the assistant's `reasoning_content` (any upstream's reasoning, see
//!   [`crate::reasoning`]) → a `reasoning` item with one `summary_text` part, streamed as
//!   `response.reasoning_summary_text.delta`s (summaries, because what Anthropic and Gemini
//!   return are summaries of their thinking, and summaries are what Responses clients
//!   render); the assistant's text and refusal → a `message` item with `output_text` and
//!   `refusal` parts; each tool call → a `function_call` item; `finish_reason` `length` →
//!   `status: "incomplete"` with reason `max_output_tokens`, `content_filter` → reason
//!   `content_filter`; usage → `input_tokens` (with cached), `output_tokens` (with
//!   reasoning), `total_tokens`. Streams become the Responses event sequence
//!   ([`stream::StreamConverter`]).
//!
//! `previous_response_id`: the server looks up the conversation it names and passes it to
//! [`inbound::to_chat`], which puts its chat messages between the instructions and the
//! input; [`inbound::Translated::input`] and the answer's assistant message
//! ([`object::assistant_message`], [`object::transcript`]) are what the server keeps.
//!
//! Refused with a 400 naming the field: built-in tools (anything but `type: "function"`),
//! a `tool_choice` naming one, `item_reference` items, image and file parts given only by `file_id`/`file_url`,
//! `truncation: "auto"`, `background: true`, `include` values other than
//! `reasoning.encrypted_content`, unknown item or part types and unknown fields.

pub mod answer;
pub mod inbound;
pub mod items;
pub mod native;
pub mod object;
mod signed;
pub mod stream;
#[cfg(test)]
mod tests;
