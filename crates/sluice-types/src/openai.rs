//! Typed OpenAI chat request, read in full for the providers whose wire format is not
//! OpenAI's (Anthropic, Gemini, Ollama): their adapters translate from these types. The
//! OpenAI-compatible path never builds them; it forwards bytes.
//!
//! Format: OpenAI's Chat Completions API reference, "Create chat completion" request body.

use serde::Deserialize;
use serde_json::Value;

/// A chat completion request.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ChatCompletionRequest {
    /// Model or route.
    pub model: String,
    /// The conversation.
    pub messages: Vec<Message>,
    /// Legacy output cap.
    #[serde(default)]
    pub max_tokens: Option<u64>,
    /// Output cap (newer name).
    #[serde(default)]
    pub max_completion_tokens: Option<u64>,
    /// Sampling temperature.
    #[serde(default)]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[serde(default)]
    pub top_p: Option<f64>,
    /// Stop sequences.
    #[serde(default)]
    pub stop: Option<Stop>,
    /// Stream the answer.
    #[serde(default)]
    pub stream: Option<bool>,
    /// Streaming options.
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Tools the model may call.
    #[serde(default)]
    pub tools: Option<Vec<Tool>>,
    /// Which tool to call.
    #[serde(default)]
    pub tool_choice: Option<ToolChoice>,
    /// Whether several tools may be called at once.
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    /// End-user id.
    #[serde(default)]
    pub user: Option<String>,
    /// Output format (`{"type": "json_object"}`, `{"type": "json_schema", ...}`).
    #[serde(default)]
    pub response_format: Option<Value>,
    /// Seed.
    #[serde(default)]
    pub seed: Option<i64>,
    /// How hard a reasoning model thinks (`minimal`, `low`, `medium`, `high`; `none`):
    /// translated into a thinking budget for providers that take one.
    #[serde(default)]
    pub reasoning_effort: Option<String>,
    /// `x_fake`: the per-request control of `sluice-testkit`'s fake upstream. The
    /// OpenAI-compatible path forwards every unknown field as it is; the translating
    /// adapters build a new body from the fields they know, and carry this one over so that
    /// tests control a fake Anthropic, Gemini or Ollama upstream the same way. Absent from
    /// real clients' requests, so real providers never see it.
    #[serde(default)]
    pub x_fake: Option<Value>,
}

impl ChatCompletionRequest {
    /// The output cap the client asked for, under either name.
    pub fn output_cap(&self) -> Option<u64> {
        self.max_completion_tokens.or(self.max_tokens)
    }
}

/// `stream_options`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct StreamOptions {
    /// Send a final usage chunk.
    #[serde(default)]
    pub include_usage: bool,
}

/// `stop`: one string or several.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// One sequence.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl Stop {
    /// As a list.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s],
            Self::Many(v) => v,
        }
    }
}

/// Who speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions.
    System,
    /// Instructions (newer name).
    Developer,
    /// The user.
    User,
    /// The model.
    Assistant,
    /// A tool's result.
    Tool,
    /// A function's result (legacy).
    Function,
}

/// One message.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Message {
    /// Who speaks.
    pub role: Role,
    /// What is said.
    #[serde(default)]
    pub content: Option<Content>,
    /// Speaker name.
    #[serde(default)]
    pub name: Option<String>,
    /// Tool calls made by the assistant.
    #[serde(default)]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// The call a tool message answers.
    #[serde(default)]
    pub tool_call_id: Option<String>,
    /// An assistant message's signed thinking, as Anthropic returned it (the
    /// `thinking_blocks` LiteLLM also uses): sent back so that Anthropic accepts a thinking
    /// turn that called tools.
    #[serde(default)]
    pub thinking_blocks: Option<Vec<ThinkingBlock>>,
}

/// One block of signed thinking: `{"type": "thinking", "thinking", "signature"}` or
/// `{"type": "redacted_thinking", "data"}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ThinkingBlock {
    /// `thinking` or `redacted_thinking`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The thinking's text.
    #[serde(default)]
    pub thinking: Option<String>,
    /// Anthropic's signature of it.
    #[serde(default)]
    pub signature: Option<String>,
    /// A redacted block's encrypted thinking.
    #[serde(default)]
    pub data: Option<String>,
}

/// Message content: a string or parts.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Text and images.
    Parts(Vec<Part>),
}

impl Content {
    /// The text of the content, parts joined, images left out.
    pub fn text(&self) -> String {
        match self {
            Self::Text(t) => t.clone(),
            Self::Parts(parts) => parts
                .iter()
                .filter_map(|p| match p {
                    Part::Text { text } => Some(text.as_str()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join(""),
        }
    }
}

/// A content part.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Part {
    /// Text.
    Text {
        /// The text.
        text: String,
    },
    /// An image by URL or data URL.
    ImageUrl {
        /// The image.
        image_url: ImageUrl,
    },
    /// Anything else (audio, files): kept so the request still parses.
    #[serde(other)]
    Other,
}

/// `image_url`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ImageUrl {
    /// `https://...` or `data:image/png;base64,...`.
    pub url: String,
}

/// A tool call made by the assistant.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ToolCall {
    /// Call id.
    pub id: String,
    /// The function called.
    pub function: FunctionCall,
}

/// `function` of a tool call.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FunctionCall {
    /// Function name.
    pub name: String,
    /// Arguments, as a JSON string.
    pub arguments: String,
}

/// A tool definition.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Tool {
    /// The function.
    pub function: FunctionDef,
}

/// `function` of a tool definition.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct FunctionDef {
    /// Name.
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// JSON Schema of the arguments.
    #[serde(default)]
    pub parameters: Option<Value>,
}

/// `tool_choice`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ToolChoice {
    /// `"none"`, `"auto"` or `"required"`.
    Mode(String),
    /// A named function.
    Named {
        /// The function.
        function: NamedFunction,
    },
}

/// `function` of a named tool choice.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NamedFunction {
    /// Function name.
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_request() {
        let r: ChatCompletionRequest = serde_json::from_str(
            r#"{"model":"m","messages":[
                {"role":"system","content":"be brief"},
                {"role":"user","content":[{"type":"text","text":"what?"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AA=="}},{"type":"input_audio","input_audio":{}}]},
                {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{\"x\":1}"}}]},
                {"role":"tool","tool_call_id":"c1","content":"42"}
            ],"stop":"END","tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],
            "tool_choice":{"type":"function","function":{"name":"f"}},"max_completion_tokens":9}"#,
        )
        .unwrap();
        assert_eq!(r.messages.len(), 4);
        assert_eq!(r.output_cap(), Some(9));
        assert_eq!(r.stop.clone().unwrap().into_vec(), ["END"]);
        assert!(
            matches!(&r.messages[1].content, Some(Content::Parts(p)) if p.len() == 3 && p[2] == Part::Other)
        );
        assert_eq!(
            r.messages[2].tool_calls.as_ref().unwrap()[0].function.name,
            "f"
        );
        assert_eq!(
            r.tool_choice,
            Some(ToolChoice::Named {
                function: NamedFunction { name: "f".into() }
            })
        );
    }
}
