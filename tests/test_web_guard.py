"""The studio's guards: body cap on chunked uploads, Host and Origin checks, an offline /docs."""

import asyncio
import json

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from classical_music.web import create_app  # noqa: E402
from classical_music.web.guard import allowed_hosts, host_ok  # noqa: E402


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    # no model is needed: nothing here composes (a missing checkpoint fails only when a job runs)
    return create_app(tmp_path_factory.mktemp("ck") / "none", tmp_path_factory.mktemp("out"),
                      max_upload_bytes=64 * 1024)


def asgi_post(app, path, chunks, headers):
    """POST through the ASGI interface, the body in chunks; returns (status, body, bytes pulled)."""
    messages, pulled = [], [0]
    it = iter(chunks)

    async def receive():
        chunk = next(it, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        pulled[0] += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message):
        messages.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
             "headers": [(k.encode(), v.encode()) for k, v in headers.items()], "client": ("127.0.0.1", 1),
             "server": ("127.0.0.1", 8000)}
    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in messages if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body"), pulled[0]


def multipart_chunks(total_mb):
    boundary = "b0undary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"primer\"; filename=\"big.mid\"\r\n"
            "Content-Type: audio/midi\r\n\r\nMThd").encode()
    yield head
    for _ in range(total_mb * 16):
        yield bytes(64 * 1024)
    yield f"\r\n--{boundary}--\r\n".encode()


def test_a_chunked_upload_is_cut_off_at_the_cap(app):
    # Transfer-Encoding: chunked, no Content-Length: 64 MB offered, the cap is 64 KiB + 64 KiB framing
    headers = {"host": "127.0.0.1:8000", "transfer-encoding": "chunked",
               "content-type": "multipart/form-data; boundary=b0undary"}
    status, body, pulled = asgi_post(app, "/api/generate_with_primer", multipart_chunks(64), headers)
    assert status == 413 and "too large" in json.loads(body)["detail"]
    assert pulled <= 128 * 1024 + 2 * 64 * 1024  # stopped within one chunk of the cap, not after 64 MB
    # a chunked JSON body is bounded the same way (it would be read whole into memory)
    status, _, pulled = asgi_post(app, "/api/generate", (b" " * 65536 for _ in range(1000)),
                                  {"host": "localhost", "content-type": "application/json"})
    assert status == 413 and pulled <= 4 * 65536


def test_wrong_host_names_are_refused(app):
    with TestClient(app, base_url="http://attacker.example") as c:  # DNS rebinding: a foreign name
        r = c.get("/")
        assert r.status_code == 400 and "Host" in r.json()["detail"]
        assert c.post("/api/generate", json={"seconds": 1}).status_code == 400
        assert not app.state.studio.jobs
    for base in ("http://localhost:8000", "http://127.0.0.1:8000", "http://[::1]:8000"):
        with TestClient(app, base_url=base) as c:
            assert c.get("/api/config").status_code == 200, base


def test_hosts_follow_the_listen_address():
    assert host_ok("studio.lan:8000", allowed_hosts("studio.lan"))
    assert not host_ok("evil.example:8000", allowed_hosts("studio.lan"))
    everywhere = allowed_hosts("0.0.0.0")  # any IP literal (nothing to rebind), no foreign names
    assert host_ok("192.168.1.20:8000", everywhere) and host_ok("[fe80::1]:8000", everywhere)
    assert not host_ok("attacker.example", everywhere)
    assert not host_ok("192.168.1.20", allowed_hosts("127.0.0.1"))
    assert not host_ok("", allowed_hosts("127.0.0.1"))


@pytest.mark.parametrize("headers", [{"Origin": "http://evil.example"}, {"Origin": "null"},
                                     {"Origin": "http://localhost:9999"}, {"Sec-Fetch-Site": "cross-site"}])
def test_cross_origin_posts_are_refused(app, headers):
    with TestClient(app, base_url="http://localhost:8000") as c:
        r = c.post("/api/generate", json={"seconds": 1}, headers=headers)
        assert r.status_code == 403 and "cross-origin" in r.json()["detail"]
        r = c.post("/api/generate_with_primer", data={"seconds": "1"}, files={"primer": ("p.mid", b"MThd")},
                   headers=headers)
        assert r.status_code == 403
    assert not app.state.studio.jobs


def test_same_origin_and_origin_less_posts_pass(app):
    with TestClient(app, base_url="http://localhost:8000") as c:
        # validation errors (422) show the request got through the guard without queueing a job
        for headers in ({"Origin": "http://localhost:8000", "Sec-Fetch-Site": "same-origin"}, {}):
            assert c.post("/api/generate", json={"seconds": -1}, headers=headers).status_code == 422


def test_docs_work_offline(app):
    with TestClient(app, base_url="http://localhost") as c:
        page = c.get("/docs")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        html = page.text
        assert "http://" not in html.replace("http://localhost", "") and "https://" not in html
        assert "<script" not in html  # nothing to load: the page is the documentation
        spec = c.get("/openapi.json").json()
        for path in spec["paths"]:
            assert path in html
        for name in ("seconds", "temperature", "top_p", "seed", "num_samples", "primer_seconds"):
            assert f"<code>{name}</code>" in html
        assert "&lt;= 120" in html  # the limits are shown
