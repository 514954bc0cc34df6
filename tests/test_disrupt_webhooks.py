"""Standard Webhooks signing and verification through the ``standardwebhooks`` library: the header
format stays what receivers already check, plain secrets keep working, bad input is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest
from standardwebhooks import Webhook

from stormwatch.disrupt.sinks import WebhookSink, sign, verify_signature
from stormwatch.errors import ConfigError

SECRET = "whsec_" + base64.b64encode(b"secret-key-for-tests").decode()
BODY = b'{"data":{"action_id":"act_1"},"type":"stormwatch.action"}'


def _headers(secret: str, msg_id: str, ts: int, body: bytes = BODY) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": sign(secret, msg_id, ts, body)}


def test_signature_is_the_standard_hmac_of_id_timestamp_body() -> None:
    """The same value the former hand-written code produced: v1,base64(HMAC-SHA256(key, "id.ts.body"))."""
    ts = 1_767_225_600
    expected = hmac.new(b"secret-key-for-tests", f"act_1.{ts}.".encode() + BODY, hashlib.sha256).digest()
    assert sign(SECRET, "act_1", ts, BODY) == "v1," + base64.b64encode(expected).decode()


def test_a_receiver_using_the_library_directly_accepts_our_deliveries() -> None:
    ts = int(time.time())
    payload = Webhook(SECRET).verify(BODY, _headers(SECRET, "act_1", ts))
    assert payload["data"]["action_id"] == "act_1"


def test_plain_secrets_are_used_as_their_utf8_bytes() -> None:
    ts = int(time.time())
    plain = "not-base64-at-all!"
    headers = _headers(plain, "act_1", ts)
    assert verify_signature(plain, headers, BODY)
    assert not verify_signature("another-secret", headers, BODY)
    expected = hmac.new(plain.encode(), f"act_1.{ts}.".encode() + BODY, hashlib.sha256).digest()
    assert headers["webhook-signature"] == "v1," + base64.b64encode(expected).decode()


def test_verification_refuses_bad_headers_and_stale_or_future_timestamps() -> None:
    now = int(time.time())
    good = _headers(SECRET, "act_1", now)
    assert verify_signature(SECRET, good, BODY)
    assert verify_signature(SECRET, {k.upper(): v for k, v in good.items()}, BODY)  # header names: any case
    assert not verify_signature(SECRET, {**good, "webhook-id": "act_2"}, BODY)
    assert not verify_signature(SECRET, {k: v for k, v in good.items() if k != "webhook-id"}, BODY)
    assert not verify_signature(SECRET, {**good, "webhook-timestamp": "soon"}, BODY)
    assert not verify_signature(SECRET, {**good, "webhook-signature": "v2,abc"}, BODY)
    assert not verify_signature(SECRET, {**good, "webhook-signature": ""}, BODY)
    assert not verify_signature("", good, BODY)  # an empty secret verifies nothing
    for skew in (-301, 301):
        assert not verify_signature(SECRET, _headers(SECRET, "act_1", now + skew), BODY)
    # tolerance_s narrows the window; it never widens the library's five minutes
    assert not verify_signature(SECRET, _headers(SECRET, "act_1", now - 60), BODY, tolerance_s=30)
    assert not verify_signature(SECRET, _headers(SECRET, "act_1", now - 600), BODY, tolerance_s=3600)
    # several signatures (key rotation): one match is enough
    rotated = {
        **good,
        "webhook-signature": sign("whsec_b3RoZXI=", "act_1", now, BODY) + " " + good["webhook-signature"],
    }
    assert verify_signature(SECRET, rotated, BODY)


def test_webhook_sink_refuses_a_secret_it_cannot_decode() -> None:
    for bad in ("whsec_a", "whsec_!!!"):  # not base64; decodes to no key at all
        with pytest.raises(ConfigError, match="base64"):
            WebhookSink("https://example.invalid/hook", bad)
    unpadded = WebhookSink("https://example.invalid/hook", "whsec_YQ")  # accepted, as by the library
    assert unpadded.name == "webhook"
    with pytest.raises(ConfigError, match="empty"):
        WebhookSink("https://example.invalid/hook", "")
    assert "secret" not in repr(WebhookSink("https://example.invalid/hook", SECRET))
