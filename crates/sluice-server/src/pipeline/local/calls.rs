//! [`CallScanner`]: a local model's call (`{"name": …, "<key>": {…}}`, as its tool format
//! writes it) read as it streams: the function's name once it is complete, then the
//! arguments' text piece by piece, exactly as generated (whole answers read the same way, so
//! whole and streamed arguments are the same text).
//!
//! The call's text is constrained to the tools' grammar, so it is JSON of that shape; keys may
//! come in any order, so arguments generated before the name are held until the name is known.

/// Where in the wrapper object the scanner is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Before a key, or between a key and its value.
    Keys,
    /// Inside the `name` string.
    Name,
    /// Inside the arguments value.
    Arguments,
    /// Inside some other value (skipped).
    Other,
}

/// Reads one call.
#[derive(Debug)]
pub(super) struct CallScanner {
    key: &'static str,
    /// Containers open (1 inside the wrapper).
    depth: u32,
    in_string: bool,
    escaped: bool,
    slot: Slot,
    /// The key just read (at depth 1), and whether a `:` followed it.
    last_key: String,
    reading_key: bool,
    after_colon: bool,
    name: String,
    name_done: bool,
    /// Arguments read before the name was known, or whitespace that may end them.
    held: String,
    /// Whitespace inside the arguments, sent once something follows it.
    pending_ws: String,
}

// === impl CallScanner ===

impl CallScanner {
    /// A scanner of calls whose arguments are under `key` (`arguments`, or Llama's
    /// `parameters`).
    pub fn new(key: &'static str) -> Self {
        Self {
            key,
            depth: 0,
            in_string: false,
            escaped: false,
            slot: Slot::Keys,
            last_key: String::new(),
            reading_key: false,
            after_colon: false,
            name: String::new(),
            name_done: false,
            held: String::new(),
            pending_ws: String::new(),
        }
    }

    /// Reads more of the call; returns the arguments text it adds (none before the name is
    /// known: what came before it is returned with the first piece after).
    pub fn push(&mut self, text: &str) -> String {
        let mut arguments = String::new();
        for c in text.chars() {
            self.char(c, &mut arguments);
        }
        if self.name_done {
            arguments.insert_str(0, &std::mem::take(&mut self.held));
            arguments
        } else {
            self.held.push_str(&arguments);
            String::new()
        }
    }

    /// The name, once known, taken (the first delta of a call carries it).
    pub fn take_name(&mut self) -> Option<String> {
        (self.name_done && !self.name.is_empty()).then(|| std::mem::take(&mut self.name))
    }

    /// Reads a whole call: its name and arguments text.
    pub fn read(key: &'static str, text: &str) -> (String, String) {
        let mut scanner = Self::new(key);
        let mut arguments = scanner.push(text);
        let name = scanner.take_name().unwrap_or_default();
        if !scanner.name_done {
            arguments = scanner.held;
        }
        (name, arguments)
    }

    fn char(&mut self, c: char, arguments: &mut String) {
        if self.slot == Slot::Arguments {
            self.argument_char(c, arguments);
            return;
        }
        if self.in_string {
            if self.escaped {
                self.escaped = false;
            } else if c == '\\' {
                self.escaped = true;
            } else if c == '"' {
                self.in_string = false;
                if self.slot == Slot::Name {
                    self.name_done = true;
                    self.slot = Slot::Keys;
                } else if self.reading_key {
                    self.reading_key = false;
                }
                return;
            }
            match self.slot {
                Slot::Name => self.name.push(c),
                _ if self.reading_key => self.last_key.push(c),
                _ => {}
            }
            return;
        }
        match c {
            '{' | '[' => {
                if self.depth == 1 && self.after_colon {
                    self.start_value(c, arguments);
                    return;
                }
                self.depth += 1;
            }
            '}' | ']' => {
                self.depth = self.depth.saturating_sub(1);
                if self.depth == 1 {
                    self.slot = Slot::Keys;
                }
            }
            '"' => {
                self.in_string = true;
                if self.depth == 1 && self.after_colon {
                    self.after_colon = false;
                    self.slot = if self.last_key == "name" {
                        Slot::Name
                    } else if self.last_key == self.key {
                        // A string as the arguments (not an object): read as text.
                        self.in_string = false;
                        self.start_value(c, arguments);
                        return;
                    } else {
                        Slot::Other
                    };
                } else if self.depth == 1 {
                    self.reading_key = true;
                    self.last_key.clear();
                }
            }
            ':' if self.depth == 1 => self.after_colon = true,
            ',' if self.depth == 1 => self.slot = Slot::Keys,
            c if c.is_whitespace() => {}
            c => {
                if self.depth == 1 && self.after_colon {
                    self.start_value(c, arguments);
                }
            }
        }
    }

    /// The first character of a value at depth 1.
    fn start_value(&mut self, c: char, arguments: &mut String) {
        self.after_colon = false;
        if self.last_key == self.key {
            self.slot = Slot::Arguments;
            self.depth = 1;
            self.argument_char(c, arguments);
        } else {
            self.slot = Slot::Other;
            if matches!(c, '{' | '[') {
                self.depth += 1;
            } else if c == '"' {
                self.in_string = true;
            }
        }
    }

    /// A character of the arguments value (depth counts from the wrapper's 1).
    fn argument_char(&mut self, c: char, arguments: &mut String) {
        if self.in_string {
            if self.escaped {
                self.escaped = false;
            } else if c == '\\' {
                self.escaped = true;
            } else if c == '"' {
                self.in_string = false;
            }
            arguments.push(c);
            return;
        }
        match c {
            '{' | '[' => self.depth += 1,
            '}' | ']' if self.depth == 1 => {
                // The wrapper closes: the arguments (a scalar) ended.
                self.pending_ws.clear();
                self.depth = 0;
                self.slot = Slot::Keys;
                return;
            }
            '}' | ']' => self.depth -= 1,
            ',' if self.depth == 1 => {
                self.pending_ws.clear();
                self.slot = Slot::Keys;
                return;
            }
            '"' => self.in_string = true,
            c if c.is_whitespace() => {
                self.pending_ws.push(c);
                return;
            }
            _ => {}
        }
        arguments.push_str(&std::mem::take(&mut self.pending_ws));
        arguments.push(c);
        if self.depth == 1 && matches!(c, '}' | ']') {
            self.slot = Slot::Keys;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_call_whole_and_in_pieces() {
        let text = "{\"name\": \"weather\", \"arguments\": {\"city\": \"Pa}ris\", \"n\": [1, {\"a\": 2}]} }";
        let (name, arguments) = CallScanner::read("arguments", text);
        assert_eq!(name, "weather");
        assert_eq!(arguments, "{\"city\": \"Pa}ris\", \"n\": [1, {\"a\": 2}]}");
        let mut scanner = CallScanner::new("arguments");
        let mut streamed = String::new();
        let mut named = None;
        for c in text.chars() {
            streamed.push_str(&scanner.push(&c.to_string()));
            if named.is_none() {
                named = scanner.take_name();
            }
        }
        assert_eq!(named.as_deref(), Some("weather"));
        assert_eq!(streamed, arguments);
    }

    #[test]
    fn arguments_before_the_name_wait_for_it() {
        let text = "{ \"parameters\" : {\"a\": 1} , \"name\":\"add\"}";
        let (name, arguments) = CallScanner::read("parameters", text);
        assert_eq!((name.as_str(), arguments.as_str()), ("add", "{\"a\": 1}"));
    }
}
