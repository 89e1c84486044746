use super::*;

fn all() -> Builtins {
    let mut s = Builtins::default();
    for b in Builtin::ALL {
        s.insert(b);
    }
    s
}

/// What the detectors find in `text`, as (kind, value).
fn found(text: &str) -> Vec<(Builtin, &str)> {
    let mut out = Vec::new();
    scan(text, all(), &mut out);
    out.sort_by_key(|h| h.start);
    out.iter()
        .map(|h| (h.kind, &text[h.start..h.end]))
        .collect()
}

#[test]
fn finds_each_kind() {
    use Builtin::*;
    let cases: &[(&str, Builtin, &str)] = &[
        ("write to ann.lee+work@mail.example.co.uk today", Email, "ann.lee+work@mail.example.co.uk"),
        ("call +1 415-555-0132 now", Phone, "+1 415-555-0132"),
        ("call (415) 555-0132", Phone, "(415) 555-0132"),
        ("call 020 7946 0958", Phone, "020 7946 0958"),
        ("card 4111 1111 1111 1111 exp", Card, "4111 1111 1111 1111"),
        ("card 4111-1111-1111-1111.", Card, "4111-1111-1111-1111"),
        ("amex 378282246310005", Card, "378282246310005"),
        ("IBAN GB82 WEST 1234 5698 7654 32 please", Iban, "GB82 WEST 1234 5698 7654 32"),
        ("iban DE89370400440532013000", Iban, "DE89370400440532013000"),
        ("ssn 123-45-6789", Ssn, "123-45-6789"),
        ("aadhaar 4991 1866 5246", Aadhaar, "4991 1866 5246"),
        ("pan ABCPE1234F ok", Pan, "ABCPE1234F"),
        ("from 192.168.10.254 to", Ip, "192.168.10.254"),
        ("v6 2001:db8::8a2e:370:7334 up", Ip, "2001:db8::8a2e:370:7334"),
        ("key sk-proj-abcdefghijklmnopqrstuvwxyz012345", Secret, "sk-proj-abcdefghijklmnopqrstuvwxyz012345"),
        ("aws AKIAIOSFODNN7EXAMPLE", Secret, "AKIAIOSFODNN7EXAMPLE"),
        ("Authorization: Bearer abcdefghijklmnop1234", Secret, "Bearer abcdefghijklmnop1234"),
        ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U", Secret, "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"),
    ];
    for (text, kind, value) in cases {
        assert_eq!(found(text), vec![(*kind, *value)], "{text}");
    }
    let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n-----END RSA PRIVATE KEY-----";
    assert_eq!(found(pem), vec![(Secret, pem)]);
}

#[test]
fn checks_the_check_digits() {
    for (text, kind) in [
        ("card 4111 1111 1111 1112", Builtin::Card),
        ("aadhaar 4991 1866 5247", Builtin::Aadhaar),
        ("IBAN GB82 WEST 1234 5698 7654 33", Builtin::Iban),
        (
            "ssn 000-12-3456 and 666-12-3456 and 123-00-4567 and 912-34-5678",
            Builtin::Ssn,
        ),
    ] {
        let mut set = Builtins::default();
        set.insert(kind);
        let mut out = Vec::new();
        scan(text, set, &mut out);
        assert_eq!(out, vec![], "{text}");
    }
}

#[test]
fn leaves_look_alikes_alone() {
    for text in [
        "order 1700000000 and 20241204 and 3.14159",
        "version 1.2.3 and 10.0.0",
        "user@localhost and @mention and a@b",
        "ABCDE1234F is not a PAN (holder type E)",
        "base64 QUJDREVGR0g0MTExMTExMTExMTExMTExMQ== here",
        "sk-short",
        "time 12:30:45",
    ] {
        assert_eq!(found(text), vec![], "{text}");
    }
}

#[test]
fn values_inside_words_are_not_values() {
    assert_eq!(found("id4111111111111111x"), vec![]);
    assert_eq!(found("x192.168.1.1"), vec![]);
}
