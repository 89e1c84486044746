//! A whole `chat.completion` answer written back as a Responses API `response` object.

use super::object::{
    assistant_message, item_id, ContentPart, Echo, OutputItem, Parts, ResponseObject, Status,
    SummaryText,
};
use crate::chunks::now_secs;
use serde::Deserialize;
use sluice_types::Usage;
use std::borrow::Cow;

#[derive(Deserialize)]
struct InCompletion<'a> {
    #[serde(default)]
    created: Option<u64>,
    #[serde(default, borrow)]
    choices: Vec<InChoice<'a>>,
}

#[derive(Deserialize)]
struct InChoice<'a> {
    #[serde(default, borrow)]
    message: Option<InAnswer<'a>>,
    #[serde(default, borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct InAnswer<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    refusal: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    tool_calls: Option<Vec<InCall<'a>>>,
    #[serde(default, borrow)]
    thinking_blocks: Option<&'a serde_json::value::RawValue>,
}

#[derive(Deserialize)]
struct InCall<'a> {
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    function: Option<InFunction<'a>>,
}

#[derive(Deserialize)]
struct InFunction<'a> {
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    arguments: Option<Cow<'a, str>>,
}

/// A whole answer as a Responses API answer.
#[derive(Debug)]
pub struct Whole {
    /// The `response` object.
    pub body: Vec<u8>,
    /// The chat `assistant` message it was, for a stored conversation.
    pub assistant: Vec<u8>,
}

/// The `response` object for an OpenAI `chat.completion` body, echoing `echo`.
pub fn from_chat(body: &[u8], echo: &Echo) -> Result<Whole, String> {
    let v: InCompletion<'_> =
        serde_json::from_slice(body).map_err(|e| format!("invalid chat completion: {e}"))?;
    let choice = v.choices.first();
    let status = Status::of_finish(choice.and_then(|c| c.finish_reason.as_deref()));
    let output = output_items(choice.and_then(|c| c.message.as_ref()), echo, status);
    let usage = Usage::from_response(body).unwrap_or_default();
    let object = ResponseObject::new(
        echo,
        Parts {
            created_at: v.created.unwrap_or_else(now_secs),
            status,
            output: &output,
            usage: Some(&usage),
            error: None,
        },
    );
    Ok(Whole {
        body: serde_json::to_vec(&object).map_err(|e| e.to_string())?,
        assistant: assistant_message(&output),
    })
}

/// The output items of the assistant's answer: its reasoning, its message (text and
/// refusal), then one `function_call` per tool call.
fn output_items(msg: Option<&InAnswer<'_>>, echo: &Echo, status: Status) -> Vec<OutputItem> {
    let id = &echo.id;
    let mut output = Vec::new();
    let Some(msg) = msg else {
        return output;
    };
    let reasoning = msg.reasoning_content.as_deref().filter(|r| !r.is_empty());
    let signed = msg.thinking_blocks.filter(|b| b.get() != "null");
    if reasoning.is_some() || signed.is_some() {
        output.push(OutputItem::reasoning(
            item_id(id, "rs", 0),
            reasoning
                .map(|r| vec![SummaryText::new(r.to_owned())])
                .unwrap_or_default(),
            signed.map(ToOwned::to_owned),
            echo.encrypted_reasoning,
        ));
    }
    let mut content = Vec::new();
    if let Some(t) = msg.content.as_deref().filter(|t| !t.is_empty()) {
        content.push(ContentPart::text(t.to_owned()));
    }
    if let Some(r) = msg.refusal.as_deref().filter(|r| !r.is_empty()) {
        content.push(ContentPart::Refusal {
            refusal: r.to_owned(),
        });
    }
    if !content.is_empty() {
        output.push(OutputItem::Message {
            id: item_id(id, "msg", output.len()),
            status: status.item_status(),
            role: "assistant",
            content,
        });
    }
    for call in msg.tool_calls.iter().flatten() {
        let function = call.function.as_ref();
        output.push(OutputItem::FunctionCall {
            id: item_id(id, "fc", output.len()),
            call_id: call.id.as_deref().unwrap_or_default().to_owned(),
            name: function
                .and_then(|f| f.name.as_deref())
                .unwrap_or_default()
                .to_owned(),
            arguments: function
                .and_then(|f| f.arguments.as_deref())
                .unwrap_or("{}")
                .to_owned(),
            status: "completed",
        });
    }
    output
}
