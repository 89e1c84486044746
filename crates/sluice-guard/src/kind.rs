//! What the detectors find: the built-in kinds, sets of them, the values found, and what
//! makes a value stand alone.

/// A built-in detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Builtin {
    /// An email address.
    Email,
    /// A phone number written as one: a leading `+`, or digits in groups (10 to 15 digits).
    Phone,
    /// A payment card number: 13 to 19 digits (spaces or hyphens between groups), Luhn-valid,
    /// starting 3 to 6.
    Card,
    /// An IBAN with a valid mod-97 check.
    Iban,
    /// A US Social Security number written `AAA-GG-SSSS` (or with spaces), valid by the
    /// SSA's rules.
    Ssn,
    /// An Indian Aadhaar number: 12 digits (optionally 4-4-4), not starting 0 or 1,
    /// Verhoeff-valid.
    Aadhaar,
    /// An Indian PAN: `AAAAA9999A` with a valid holder type.
    Pan,
    /// An IPv4 or IPv6 address.
    Ip,
    /// An API key or token: OpenAI, Anthropic, AWS, GitHub, GitLab, Slack, Google, Groq keys,
    /// private keys (PEM), JWTs, bearer tokens.
    Secret,
}

impl Builtin {
    /// Every built-in detector.
    pub const ALL: [Self; 9] = [
        Self::Email,
        Self::Phone,
        Self::Card,
        Self::Iban,
        Self::Ssn,
        Self::Aadhaar,
        Self::Pan,
        Self::Ip,
        Self::Secret,
    ];

    /// Its name in config.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Phone => "phone",
            Self::Card => "card",
            Self::Iban => "iban",
            Self::Ssn => "ssn",
            Self::Aadhaar => "aadhaar",
            Self::Pan => "pan",
            Self::Ip => "ip",
            Self::Secret => "secret",
        }
    }

    /// The detector named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.name() == name)
    }

    /// The label of its placeholders (`[EMAIL_1]`).
    pub const fn label(self) -> &'static str {
        match self {
            Self::Email => "EMAIL",
            Self::Phone => "PHONE",
            Self::Card => "CARD",
            Self::Iban => "IBAN",
            Self::Ssn => "SSN",
            Self::Aadhaar => "AADHAAR",
            Self::Pan => "PAN",
            Self::Ip => "IP",
            Self::Secret => "SECRET",
        }
    }
}

/// Which built-ins to run, as a bit set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Builtins(u16);

impl Builtins {
    /// Adds `b`.
    pub fn insert(&mut self, b: Builtin) {
        self.0 |= 1 << b as u16;
    }

    /// Whether `b` is in.
    pub const fn contains(self, b: Builtin) -> bool {
        self.0 & (1 << b as u16) != 0
    }

    /// Whether none is.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// A value found: its byte range and what found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    /// Start, in bytes.
    pub start: usize,
    /// End, exclusive.
    pub end: usize,
    /// The built-in that found it.
    pub kind: Builtin,
}

/// Whether `b` is part of a word (so a value next to it is not a value of its own).
pub(crate) fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Whether `t[start..end]` stands alone: no word character on either side.
pub(crate) fn bounded(t: &[u8], start: usize, end: usize) -> bool {
    (start == 0 || !is_word(t[start - 1])) && t.get(end).is_none_or(|&b| !is_word(b))
}
