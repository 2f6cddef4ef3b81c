"""The seed's stack as a benchmark peer: aiosmtpd receiving, the standard email parser, httpx posting
JSON to the HTTP upstream stand-in (keep-alive), 250 only after a 2xx. Not part of the gateway.
Env: PEER_PORT, PEER_MODE (plain | tls), UPSTREAM_URL, TLS_CERT_PATH, TLS_KEY_PATH, PEER_USER, PEER_PASS."""
import asyncio
import base64
import email
import email.policy
import os
import signal
import ssl

import httpx
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

URL = os.environ["UPSTREAM_URL"]
TLS = os.environ.get("PEER_MODE") == "tls"
USER = os.environ.get("PEER_USER", "bench").encode()
PASS = os.environ.get("PEER_PASS", "bench-password").encode()


class Handler:
    def __init__(self, client):
        self.client = client

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        text = msg.get_body(preferencelist=("plain",))
        html = msg.get_body(preferencelist=("html",))
        payload = {
            "envelope": {"mail_from": envelope.mail_from, "rcpt_to": envelope.rcpt_tos},
            "message_id": msg["message-id"],
            "from": msg["from"],
            "to": msg["to"],
            "subject": msg["subject"],
            "text": text.get_content() if text is not None else None,
            "html": html.get_content() if html is not None else None,
            "headers": [{"name": k, "value": str(v)} for k, v in msg.items()],
            "attachments": [
                {
                    "filename": part.get_filename(),
                    "content_type": part.get_content_type(),
                    "content_base64": base64.b64encode(part.get_payload(decode=True) or b"").decode(),
                }
                for part in msg.iter_attachments()
            ],
        }
        try:
            response = await self.client.post(URL, json=payload, headers={"authorization": "Bearer bench"})
        except httpx.HTTPError:
            return "451 4.3.0 Temporary delivery failure, try again later"
        if 200 <= response.status_code < 300:
            return "250 2.0.0 Ok: queued"
        return "451 4.3.0 Temporary delivery failure, try again later"


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == USER and auth_data.password == PASS
    return AuthResult(success=ok)


async def main():
    client = httpx.AsyncClient(limits=httpx.Limits(max_connections=256, max_keepalive_connections=256))
    handler = Handler(client)
    context = None
    if TLS:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(os.environ["TLS_CERT_PATH"], os.environ["TLS_KEY_PATH"])

    def factory():
        if TLS:
            return SMTP(handler, hostname="bench.localhost", data_size_limit=26214400, tls_context=context,
                        require_starttls=True, authenticator=authenticator, auth_required=True, auth_require_tls=True)
        return SMTP(handler, hostname="bench.localhost", data_size_limit=26214400)

    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    server = await loop.create_server(factory, "127.0.0.1", int(os.environ["PEER_PORT"]))
    async with server:
        await stop
    await client.aclose()


asyncio.run(main())
