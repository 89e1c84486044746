use super::*;

fn parse(kind: MediaKind, body: &str) -> Result<MediaRequest<'_>, InvalidRequest> {
    MediaRequest::parse(kind, body.as_bytes())
}

#[test]
fn speech_counts_characters_and_reads_its_stream_format() {
    let r = parse(
        MediaKind::Speech,
        r#"{"model":"tts","input":"héllo wörld","voice":"alloy"}"#,
    )
    .unwrap();
    assert_eq!(r.units.characters, 11);
    assert!(!r.stream);
    let r = parse(
        MediaKind::Speech,
        r#"{"model":"tts","input":"hi","voice":{"id":"v1"},"stream_format":"sse"}"#,
    )
    .unwrap();
    assert!(r.stream);
    for (body, param) in [
        (r#"{"model":"tts","voice":"alloy"}"#, "input"),
        (r#"{"model":"tts","input":"","voice":"alloy"}"#, "input"),
        (r#"{"model":"tts","input":"x"}"#, "voice"),
        (
            r#"{"model":"tts","input":"x","voice":"a","stream_format":"ogg"}"#,
            "stream_format",
        ),
        (r#"{"input":"x","voice":"a"}"#, "model"),
    ] {
        assert_eq!(
            parse(MediaKind::Speech, body).unwrap_err().param,
            Some(param),
            "{body}"
        );
    }
}

#[test]
fn images_read_count_size_and_quality() {
    let r = parse(
        MediaKind::ImageGeneration,
        r#"{"model":"img","prompt":"a cat","n":2,"size":"1024x1792","quality":"HD"}"#,
    )
    .unwrap();
    assert_eq!(r.units.images, 2);
    assert_eq!(r.units.image_size, Some((1024, 1792)));
    assert_eq!(r.units.image_quality.as_deref(), Some("hd"));
    let auto = parse(
        MediaKind::ImageGeneration,
        r#"{"model":"img","prompt":"a cat","size":"auto"}"#,
    )
    .unwrap();
    assert_eq!((auto.units.images, auto.units.image_size), (1, None));
    for (body, param) in [
        (r#"{"model":"img"}"#, "prompt"),
        (r#"{"model":"img","prompt":"x","n":11}"#, "n"),
        (r#"{"model":"img","prompt":"x","size":"big"}"#, "size"),
    ] {
        assert_eq!(
            parse(MediaKind::ImageGeneration, body).unwrap_err().param,
            Some(param),
            "{body}"
        );
    }
}

#[test]
fn rerank_takes_strings_or_objects_with_text() {
    let r = parse(
        MediaKind::Rerank,
        r#"{"model":"rr","query":"q","documents":["a",{"text":"bb","title":"t"}],"top_n":1}"#,
    )
    .unwrap();
    assert_eq!(r.units.documents, 2);
    for body in [
        r#"{"model":"rr","query":"q","documents":[1,2]}"#,
        r#"{"model":"rr","query":"q","documents":[{"title":"no text"}]}"#,
        r#"{"model":"rr","query":"q","documents":"a"}"#,
        r#"{"model":"rr","query":"q","documents":[]}"#,
        r#"{"model":"rr","query":"q"}"#,
    ] {
        let e = parse(MediaKind::Rerank, body).unwrap_err();
        assert_eq!(e.param, Some("documents"), "{body}: {}", e.message);
    }
    assert_eq!(
        parse(
            MediaKind::Rerank,
            r#"{"model":"rr","query":" ","documents":["a"]}"#
        )
        .unwrap_err()
        .param,
        Some("query")
    );
    assert_eq!(
        parse(
            MediaKind::Rerank,
            r#"{"model":"rr","query":"q","documents":["a"],"top_n":0}"#
        )
        .unwrap_err()
        .param,
        Some("top_n")
    );
}

#[test]
fn moderation_input_and_the_model_rewritten() {
    let body = Bytes::from_static(br#"{"model":"mod","input":["a","b"]}"#);
    let r = MediaRequest::parse(MediaKind::Moderation, &body).unwrap();
    assert_eq!(
        &r.upstream_body(&body, "omni-moderation-latest")[..],
        br#"{"model":"omni-moderation-latest","input":["a","b"]}"#
    );
    assert_eq!(
        parse(MediaKind::Moderation, r#"{"model":"mod","input":5}"#)
            .unwrap_err()
            .param,
        Some("input")
    );
}
