"""The signaling server's front door: page, token, limits, refusals, bad offers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from agent.calls import CallManager
from transports.webrtc import WebRTCServer, parse_ice_servers, serve_webrtc
from tests.webrtc.webrtc_client import PyCaller

TOKEN = "correct horse battery staple"


def quiet_bot(info):  # type: ignore[no-untyped-def]
    return []


@contextlib.asynccontextmanager
async def running(bot=quiet_bot, **options) -> AsyncIterator[tuple[WebRTCServer, CallManager, aiohttp.ClientSession]]:  # type: ignore[no-untyped-def]
    manager = CallManager(bot, max_sessions=options.pop("max_sessions", None))
    server = await serve_webrtc(manager, "127.0.0.1", 0, **options)
    try:
        async with aiohttp.ClientSession() as http:
            yield server, manager, http
    finally:
        await server.close()
        await manager.close()


async def browser_like_offer() -> str:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio")
    pc.createDataChannel("events")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


@pytest.mark.asyncio
async def test_the_page_is_public_but_calls_need_the_token() -> None:
    async with running(token=TOKEN, ice_servers=["stun:stun.example.org:3478"]) as (server, manager, http):
        async with http.get(server.url) as page:
            assert page.status == 200 and "<title>voxwire" in await page.text()
            assert page.headers["Referrer-Policy"] == "no-referrer"
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {TOKEN}"}):
            async with http.get(server.url + "config", headers=headers) as config:
                assert config.status == 401
            async with http.post(server.url + "offer", json={}, headers=headers) as offer:
                assert offer.status == 401
        good = {"Authorization": f"Bearer {TOKEN}"}
        async with http.get(server.url + "config", headers=good) as config:
            assert await config.json() == {"iceServers": [{"urls": "stun:stun.example.org:3478"}]}
        caller = PyCaller()
        status, body = await caller.call(server.url, TOKEN)
        assert status == 200 and body["session_id"] in manager.sessions
        await caller.close()


@pytest.mark.asyncio
async def test_bad_offers_get_a_clear_4xx_and_leave_nothing_behind() -> None:
    async with running() as (server, manager, http):
        url = server.url + "offer"
        cases = [
            ({"data": b"{not json"}, 400, "JSON"),
            ({"json": ["sdp"]}, 400, "expected"),
            ({"json": {"type": "answer", "sdp": "v=0"}}, 400, "expected"),
            ({"json": {"type": "offer", "sdp": "v=0\r\nm=audio 9 nonsense\r\n"}}, 400, "SDP"),
            ({"json": {"type": "offer", "sdp": "v=0\r\ns=-\r\n"}}, 400, "no audio"),
            ({"data": b"x" * 200_000}, 413, ""),
        ]
        for kwargs, status, why in cases:
            async with http.post(url, **kwargs) as response:
                assert response.status == status, (kwargs, await response.text())
                assert why in await response.text()
        assert not server.calls and not manager.sessions
        caller = PyCaller()  # and the server still takes a good call
        status, _ = await caller.call(server.url)
        assert status == 200
        await caller.close()


@pytest.mark.asyncio
async def test_a_full_server_refuses_with_503() -> None:
    async with running(max_sessions=0) as (server, manager, http):
        async with http.post(server.url + "offer", json={"type": "offer", "sdp": await browser_like_offer()}) as response:
            assert response.status == 503
            assert "busy" in (await response.json())["error"]


@pytest.mark.asyncio
async def test_a_bot_that_fails_to_build_fails_only_its_own_call() -> None:
    calls = 0

    def flaky_bot(info):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("database is down")
        return []

    async with running(flaky_bot) as (server, manager, http):
        first = PyCaller()
        status, body = await first.call(server.url)
        assert status == 500 and "could not be set up" in body["error"]
        await first.close()
        second = PyCaller()
        status, _ = await second.call(server.url)
        assert status == 200
        await second.close()
        assert len(server.calls) <= 1


def test_ice_server_entries_are_checked() -> None:
    servers = parse_ice_servers(["stun:stun.example.org", {"urls": ["turn:t.example.org"], "username": "u", "credential": "p"}])
    assert [s.urls for s in servers] == ["stun:stun.example.org", ["turn:t.example.org"]]
    for bad in (["http://stun.example.org"], [{"urls": "turn:t.example.org"}], [{"username": "u"}], [42]):
        with pytest.raises(ValueError):
            parse_ice_servers(bad)


@pytest.mark.asyncio
async def test_the_server_can_live_under_another_apps_path() -> None:
    from aiohttp import web

    manager = CallManager(quiet_bot)
    server = WebRTCServer(manager)
    parent = web.Application()
    parent.add_subapp("/call/", server.app)
    runner = web.AppRunner(parent)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/call/"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(base) as page:
                assert page.status == 200
            async with http.post(base + "offer", data=b"x" * 100_000) as big:
                assert big.status == 413  # the offer limit holds inside a parent app too
        caller = PyCaller()
        status, _ = await caller.call(base)
        assert status == 200
        await caller.close()
    finally:
        await server.close()
        await runner.cleanup()
        await manager.close()


def test_ice_servers_from_the_environment() -> None:
    from transports.webrtc.plugin import ice_servers_from_env

    assert ice_servers_from_env(None) == [] and ice_servers_from_env(" ") == []
    assert ice_servers_from_env("stun:a.example:3478, stun:b.example") == ["stun:a.example:3478", "stun:b.example"]
    turn = '[{"urls": "turn:t.example", "username": "u", "credential": "p"}]'
    assert parse_ice_servers(ice_servers_from_env(turn))[0].username == "u"


@pytest.mark.asyncio
@pytest.mark.parametrize("close_fails", ["in pc.close", "at once"])
async def test_a_failing_close_after_a_failed_offer_masks_nothing_and_leaks_nothing(
    close_fails: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The answer fails after the session started, then closing the half-built call fails too."""
    import asyncio
    import logging

    from transports.webrtc.peer import PeerCall

    caplog.set_level(logging.INFO, logger="transports.webrtc")
    offer = await browser_like_offer()
    started: list[str] = []
    unclosed: list[PeerCall] = []

    async def answer_fails(self: RTCPeerConnection) -> None:
        raise RuntimeError("DTLS certificate generation failed")

    real_pc_close = RTCPeerConnection.close

    async def pc_close_fails(self: RTCPeerConnection) -> None:
        await real_pc_close(self)
        raise RuntimeError("ICE transport already gone")

    async def close_fails_at_once(self: PeerCall, reason: str) -> None:
        unclosed.append(self)
        raise RuntimeError("event channel already gone")

    async with running() as (server, manager, http):
        manager.on_session(lambda session, info: started.append(info.session_id))
        with monkeypatch.context() as patch:
            patch.setattr(RTCPeerConnection, "createAnswer", answer_fails)
            if close_fails == "in pc.close":
                patch.setattr(RTCPeerConnection, "close", pc_close_fails)
            else:
                patch.setattr(PeerCall, "close", close_fails_at_once)
            async with http.post(server.url + "offer", json={"type": "offer", "sdp": offer}) as response:
                status, body = response.status, await response.json()
        for call in unclosed:  # what the failed close left behind, released for the test's sake
            await call.close("test_cleanup")
        await asyncio.sleep(0.1)
        assert started, "the session had started before the answer failed"
        assert status == 500 and body["error"] == "the call could not be set up", "the first error reached the caller"
        assert not server.calls and not manager.sessions, "the failed call was left behind"
        logged = caplog.text
        assert "DTLS certificate generation failed" in logged
        assert "closing after setup_failed failed too" in logged
        caller = PyCaller()  # and the next call is answered
        status, _ = await caller.call(server.url)
        assert status == 200
        await caller.close()
