"""An OTLP/HTTP trace receiver for the tests: opentelemetry-proto's own generated classes
(the `opentelemetry-proto` package) parse what sluice posts to /v1/traces, and every span
is kept, as JSON, for GET /spans.

Prints `PORT <n>` once listening on 127.0.0.1 (`--port N`: on port N). `--discard` parses
nothing and keeps nothing, and needs no package (bench/traces.sh's sink)."""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DISCARD = "--discard" in sys.argv
PORT = int(sys.argv[sys.argv.index("--port") + 1]) if "--port" in sys.argv else 0
if not DISCARD:
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
SPANS = []
LOCK = threading.Lock()
KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


def value(v):
    which = v.WhichOneof("value")
    return getattr(v, which) if which else None


def span_json(resource, scope, s):
    return {
        "resource": {a.key: value(a.value) for a in resource.attributes},
        "scope": {"name": scope.name, "version": scope.version},
        "trace_id": s.trace_id.hex(),
        "span_id": s.span_id.hex(),
        "parent_span_id": s.parent_span_id.hex(),
        "trace_state": s.trace_state,
        "flags": s.flags,
        "name": s.name,
        "kind": KINDS.get(s.kind, s.kind),
        "start": s.start_time_unix_nano,
        "end": s.end_time_unix_nano,
        "attributes": {a.key: value(a.value) for a in s.attributes},
        "events": [
            {
                "name": e.name,
                "time": e.time_unix_nano,
                "attributes": {a.key: value(a.value) for a in e.attributes},
            }
            for e in s.events
        ],
        "status": {"code": s.status.code, "message": s.status.message},
    }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body, content_type):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path != "/v1/traces":
            return self.answer(404, b"not found", "text/plain")
        if self.headers.get("Content-Type") != "application/x-protobuf":
            return self.answer(415, b"protobuf only", "text/plain")
        if DISCARD:
            # An empty ExportTraceServiceResponse is zero bytes.
            return self.answer(200, b"", "application/x-protobuf")
        request = trace_service_pb2.ExportTraceServiceRequest()
        request.ParseFromString(body)
        spans = [
            span_json(rs.resource, ss.scope, s)
            for rs in request.resource_spans
            for ss in rs.scope_spans
            for s in ss.spans
        ]
        with LOCK:
            SPANS.extend(spans)
        reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        self.answer(200, reply, "application/x-protobuf")

    def do_GET(self):
        with LOCK:
            body = json.dumps(SPANS).encode()
        self.answer(200, body, "application/json")


server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
print(f"PORT {server.server_address[1]}", flush=True)
server.serve_forever()
