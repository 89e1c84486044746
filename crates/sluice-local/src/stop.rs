//! Stop strings that may span tokens.
//!
//! Generated text passes through [`StopBuffer`]: text that could still be the start of a stop
//! string is held back until the next token decides; a completed stop string ends generation
//! and neither it nor anything after it is ever emitted.

/// Holds back generated text that might begin a stop string.
#[derive(Debug, Default)]
pub(crate) struct StopBuffer {
    stops: Vec<String>,
    pending: String,
}

/// What [`StopBuffer::push`] decided.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Pushed {
    /// Text that is safe to emit now.
    pub(crate) emit: String,
    /// A stop string matched: generation ends.
    pub(crate) stopped: bool,
}

// === impl StopBuffer ===

impl StopBuffer {
    pub(crate) fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            pending: String::new(),
        }
    }

    pub(crate) fn push(&mut self, text: &str) -> Pushed {
        self.pending.push_str(text);
        if self.stops.is_empty() {
            return Pushed {
                emit: std::mem::take(&mut self.pending),
                stopped: false,
            };
        }
        // Earliest match wins: the text before it is emitted, the rest dropped.
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|stop| self.pending.find(stop.as_str()))
            .min()
        {
            let mut emit = std::mem::take(&mut self.pending);
            emit.truncate(at);
            return Pushed {
                emit,
                stopped: true,
            };
        }
        // Hold back the longest suffix that is a proper prefix of some stop string.
        let mut hold = 0;
        for stop in &self.stops {
            for (k, _) in stop.char_indices().skip(1) {
                if k > hold && self.pending.ends_with(&stop[..k]) {
                    hold = k;
                }
            }
        }
        let keep = self.pending.split_off(self.pending.len() - hold);
        let emit = std::mem::replace(&mut self.pending, keep);
        Pushed {
            emit,
            stopped: false,
        }
    }

    /// Generation ended for another reason: the held-back text is ordinary output.
    pub(crate) fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stops(list: &[&str]) -> StopBuffer {
        StopBuffer::new(&list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
    }

    #[test]
    fn holds_back_a_possible_prefix_and_drops_the_stop() {
        let mut b = stops(&["END"]);
        assert_eq!(
            b.push("abc E"),
            Pushed {
                emit: "abc ".into(),
                stopped: false
            }
        );
        assert_eq!(
            b.push("N"),
            Pushed {
                emit: "".into(),
                stopped: false
            }
        );
        assert_eq!(
            b.push("Dxyz"),
            Pushed {
                emit: "".into(),
                stopped: true
            }
        );
    }

    #[test]
    fn releases_a_prefix_that_did_not_complete() {
        let mut b = stops(&["END"]);
        assert_eq!(b.push("xE").emit, "x");
        assert_eq!(b.push("Nx").emit, "ENx");
        assert_eq!(b.push("EN").emit, "");
        assert_eq!(b.finish(), "EN");
    }

    #[test]
    fn earliest_of_several_stops_wins_and_multibyte_is_safe() {
        let mut b = stops(&["é!", "zz"]);
        assert_eq!(
            b.push("aé"),
            Pushed {
                emit: "a".into(),
                stopped: false
            }
        );
        assert_eq!(
            b.push("zzé!"),
            Pushed {
                emit: "é".into(),
                stopped: true
            }
        );
        let mut none = stops(&[]);
        assert_eq!(
            none.push("anything"),
            Pushed {
                emit: "anything".into(),
                stopped: false
            }
        );
    }
}
