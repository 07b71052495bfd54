"""gunicorn's own refusals as the envelope (core/web/gunicorn_errors.py): what cannot
be sent to a real gunicorn from a test (its 500), and the guard on its function."""

from __future__ import annotations

import json

import gunicorn.util
import pytest

from core.web import gunicorn_errors


def test_a_500_of_gunicorn_gives_its_request_id_like_the_apps() -> None:
    head, _, body = gunicorn_errors.answer(500, "Internal Server Error", "", "a" * 32).partition(
        b"\r\n\r\n"
    )
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 500 Internal Server Error"
    assert "Content-Type: application/json" in lines and "X-Request-ID: " + "a" * 32 in lines
    assert f"Content-Length: {len(body)}" in lines
    assert json.loads(body) == {
        "code": 500,
        "status": "Internal Server Error",
        "message": "Internal server error.",
        "request_id": "a" * 32,
        "trace_id": None,
    }


def test_a_gunicorn_whose_write_error_changed_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def write_error(sock: object, status: int, reason: str) -> None:
        """A later gunicorn's, say, with other arguments."""

    monkeypatch.setattr(gunicorn.util, "write_error", write_error)
    with pytest.raises(RuntimeError, match="write_error takes"):
        gunicorn_errors.install(gunicorn_errors.LIMITS)
    assert gunicorn.util.write_error is not gunicorn_errors.write_error
