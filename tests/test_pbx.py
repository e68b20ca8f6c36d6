"""A real Asterisk 22 (Debian sid, in a chroot built by scripts/build_asterisk_chroot.sh) with sipp as the phone.

A sipp call to extension 100 streams real Mandarin speech (AISHELL, as 8 kHz μ-law RTP); the dialplan hands the
channel to our AudioSocket server; the monitor transcribes it with the real ASR model, the test rule fires and
the warning tone is written back into the channel — and is found, by a packet capture, in the RTP Asterisk
sends to that phone; a supervisor's halt over REST sends the hang-up frame, and sipp sees Asterisk's BYE.
Two legs (extensions 301-302, two sipp phones): ONE monitored call with two speakers through the monitor's own
ARI Stasis application, and through dialplan AudioSocket taps without ARI.
If the PBX cannot be built or started these tests fail: they never skip.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from compliance_monitor.audio.g711 import ulaw_decode
from tests.conftest import AISHELL, AUDIO, REPO, SHARED, LiveServer, free_port, make_settings
from tests.wsclient import record_feed

pytestmark = [pytest.mark.pbx, pytest.mark.slow]

CONFIGS = SHARED / "telephony"
UUID = "40325ec2-5efd-4bd3-805f-53576e581d13"  # the one extension 100 of the shared dialplan sends
CLIP = "BAC009S0764W0121.wav"


def _run(*cmd: str, timeout: float = 30, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd, check=False)


def build_root() -> Path:
    done = _run(str(REPO / "scripts" / "build_asterisk_chroot.sh"), timeout=900)
    if done.returncode != 0:
        pytest.fail(
            f"could not build the Asterisk chroot (run scripts/build_asterisk_chroot.sh):\n{done.stderr[-2000:]}"
        )
    return Path(done.stdout.strip().splitlines()[-1])


class Asterisk:
    """Asterisk in the chroot with the shared loopback configs, AudioSocket pointed at ``audiosocket_port``."""

    def __init__(self, root: Path, audiosocket_port: int, dialplan: str = "") -> None:
        self.root = root
        etc = root / "etc" / "asterisk"
        for conf in (CONFIGS / "asterisk").glob("*.conf"):
            text = conf.read_text()
            if conf.name == "extensions.conf":  # extra extensions of the customer's context
                text = text.replace("[from-agent]", f"{dialplan}\n[from-agent]")
            text = text.replace("127.0.0.1:9092", f"127.0.0.1:{audiosocket_port}")
            if conf.name == "logger.conf":  # channels, bridges and Stasis in its log, for a failure's message
                text = text.replace("error,verbose\n", "error,verbose(4)\n")
            (etc / conf.name).write_text(text)
        self.proc: subprocess.Popen[bytes] | None = None

    def cli(self, command: str) -> subprocess.CompletedProcess[str]:
        return _run("chroot", str(self.root), "/usr/sbin/asterisk", "-rx", command, timeout=15)

    def state(self) -> str:
        """What Asterisk holds now, for a failure's message: channels, bridges, RTP counts, its log since start."""
        commands = ("core show channels verbose", "bridge show all", "pjsip show channelstats")
        shown = "\n".join(f"*CLI> {c}\n{self.cli(c).stdout}" for c in commands)
        log = (self.root / "var/log/asterisk/messages").read_text(errors="replace")[self.log_from :]
        return f"{shown}\n--- Asterisk's log ---\n{log[-6000:]}"

    def __enter__(self) -> Asterisk:
        self.cli("core stop now")  # one left over from an interrupted run
        messages = self.root / "var/log/asterisk/messages"
        self.log_from = len(messages.read_text(errors="replace")) if messages.exists() else 0
        self.proc = subprocess.Popen(
            ["chroot", str(self.root), "/usr/sbin/asterisk", "-f", "-U", "asterisk", "-G", "asterisk"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while "customer" not in self.cli("pjsip show endpoints").stdout:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read().decode()[-2000:] if self.proc.stderr else ""
                pytest.fail(f"Asterisk did not start in {self.root}: {err}")
            time.sleep(0.5)
        return self

    def __exit__(self, *exc: object) -> None:
        self.cli("core stop now")
        if self.proc is not None:
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture(scope="module")
def asterisk_root() -> Path:
    if os.geteuid() != 0 or not all(shutil.which(tool) for tool in ("sipp", "sox", "tcpdump")):
        pytest.fail("the pbx tests need root (chroot), sipp, sox and tcpdump (apt-get install sip-tester sox tcpdump)")
    return build_root()


def rtp_payloads(pcap: Path, *, dst_port: int | None = None) -> list[bytes]:
    """The RTP payloads of a loopback capture (pcap, Ethernet link layer, IPv4/UDP), or those to ``dst_port``."""
    data = pcap.read_bytes()
    link = struct.unpack("<I", data[20:24])[0]
    skip = {1: 14, 113: 16, 0: 4}[link]  # Ethernet, Linux cooked, BSD loopback
    out, pos = [], 24
    while pos + 16 <= len(data):
        caplen = struct.unpack("<I", data[pos + 8 : pos + 12])[0]
        packet = data[pos + 16 : pos + 16 + caplen]
        pos += 16 + caplen
        ip = packet[skip:]
        udp = ip[(ip[0] & 0x0F) * 4 :]
        dest = struct.unpack("!H", udp[2:4])[0]
        rtp = udp[8:]
        if dst_port not in (None, dest):
            continue
        if len(rtp) > 12 and rtp[0] >> 6 == 2:
            out.append(rtp[12 + 4 * (rtp[0] & 0x0F) :])
    return out


def tone_seconds(payloads: list[bytes], hz: float = 1000.0) -> float:
    """How long the μ-law audio holds a clear ``hz`` tone: 20 ms frames where it carries most of the energy."""
    held = 0.0
    for payload in payloads:
        pcm = ulaw_decode(payload).astype(np.float64)
        if len(pcm) < 80 or not pcm.any():
            continue
        t = np.arange(len(pcm)) / 8000
        at_hz = abs(np.dot(pcm, np.exp(-2j * np.pi * hz * t))) ** 2 * 2 / len(pcm)
        if at_hz / np.dot(pcm, pcm) > 0.6 and np.abs(pcm).max() > 2000:
            held += len(pcm) / 8000
    return held


@pytest.fixture
def phone_dir(tmp_path: Path) -> Path:
    """sipp's working directory: the scenario and the customer's speech as 8 kHz μ-law."""
    shutil.copy(CONFIGS / "uac_stream.xml", tmp_path)
    done = _run("sox", str(AUDIO / CLIP), "-r", "8000", "-c", "1", "-e", "u-law", str(tmp_path / "cust_ulaw.wav"))
    assert done.returncode == 0, done.stderr
    return tmp_path


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    # The real ASR model; the test rule pack fires on 交易, which the clip says.
    settings = make_settings(tmp_path, audiosocket={"port": free_port()}, ingest={"idle_timeout_s": 60})
    with LiveServer(settings) as live:
        yield live


async def test_a_sipp_call_through_asterisk_is_transcribed_warned_and_halted(
    asterisk_root: Path, phone_dir: Path, server: LiveServer
) -> None:
    port = server.app.state.audiosocket.port
    async with httpx.AsyncClient(base_url=server.http, timeout=30) as client:
        # What an ARI application (or the dialplan's CURL) registers: this socket is the collector's leg.
        registered = await client.post(
            f"/api/audiosocket/calls/{UUID}", json={"call_id": "pbx-call", "agent_id": "1001", "speaker": "agent"}
        )
        assert registered.status_code == 201
        with Asterisk(asterisk_root, port):
            async with record_feed(f"{server.ws}/ws/console") as console:
                media_port = free_port() & ~1
                capture = await asyncio.create_subprocess_exec(
                    *(
                        "tcpdump",
                        "-i",
                        "lo",
                        "-U",
                        "-w",
                        str(phone_dir / "to_phone.pcap"),
                        f"udp dst port {media_port}",
                    ),
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
                await asyncio.sleep(1)  # tcpdump is listening before the call starts
                sipp = await asyncio.create_subprocess_exec(
                    *("sipp", "-sf", "uac_stream.xml", "-s", "100", "127.0.0.1:5060", "-mi", "127.0.0.1"),
                    *("-p", str(free_port()), "-mp", str(media_port), "-m", "1", "-nostdin", "-timeout", "120"),
                    cwd=phone_dir,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.PIPE,
                )
                try:
                    events = await console.wait_for(
                        lambda ev: any(e["type"] == "transcript" and e["final"] and e["text"] for e in ev), 90
                    )
                    finals = [e["text"] for e in events if e["type"] == "transcript" and e["final"]]
                    reference = AISHELL[CLIP]
                    heard = sum(ch in "".join(finals) for ch in reference) / len(reference)
                    assert heard >= 0.6, finals  # the speech crossed SIP, RTP, Asterisk and AudioSocket intact
                    await console.wait_for(
                        lambda ev: any(e["type"] == "action_outcome" and e["action"] == "warn_collector" for e in ev),
                        30,
                    )
                    halted = await client.post("/api/calls/pbx-call/halt", json={"reason": "supervisor halt"})
                    assert halted.json()["outcome"] == "done", halted.text
                    _, err = await asyncio.wait_for(sipp.communicate(), 30)
                    assert sipp.returncode == 0, f"sipp did not get its BYE: {err.decode()[-1500:]}"
                    await console.wait_call_ended("pbx-call", 30)
                finally:
                    if sipp.returncode is None:
                        sipp.kill()
                        await sipp.wait()
                    capture.terminate()
                    await asyncio.wait_for(capture.wait(), 10)
        call = (await client.get("/api/calls/pbx-call")).json()
    assert call["call"]["bridge"] == "audiosocket" and call["call"]["end_reason"] == "halted"
    outcomes = {(a["action"], a["outcome"]) for a in call["actions"]}
    assert ("warn_collector", "done") in outcomes and ("halt_call", "done") in outcomes
    # The two 180 ms beeps reached the phone on this leg, as RTP from Asterisk.
    heard_s = tone_seconds(rtp_payloads(phone_dir / "to_phone.pcap"))
    print(f"warning tone in the RTP to the phone: {heard_s:.2f} s")
    assert heard_s >= 0.25


# --------------------------------------------------------------------------- two legs, one call, through the monitor

STASIS_301 = "exten => 301,1,Stasis(compliance-monitor,PJSIP/agent,1001)\n same => n,Hangup()"
# Without ARI: each leg gets a tap — a Local channel whose one half ChanSpies that leg (``o``: its own voice; the
# collector's tap also whispers, ``w``) and whose other half streams to our AudioSocket under a UUID registered
# by CURL with the call id, the party and ``legs=agent,customer``. Our 0x00 (halt) makes the tap hang up its leg.
DIALPLAN_302 = r"""
exten => 302,1,Answer()
 same => n,Set(CM_CALL=${UNIQUEID})
 same => n,Gosub(cm-tap-leg,s,1(${CM_CALL},customer,qoE))
 same => n,Dial(PJSIP/agent,30,U(cm-tap-leg^${CM_CALL}^agent^qoEw))
 same => n,Hangup()
[cm-tap-leg]
exten => s,1,Set(H=${MD5(${ARG1}${ARG2})})
 same => n,Set(U=${H:0:8}-${H:8:4}-${H:12:4}-${H:16:4}-${H:20:12})
 same => n,Set(R=${CURL(http://127.0.0.1:HTTPPORT/api/audiosocket/calls/${U},call_id=${ARG1}&agent_id=1001&speaker=${ARG2}&legs=agent,customer)})
 same => n,Set(GLOBAL(CMTAP_${H})=${CHANNEL})
 same => n,Originate(Local/${U}@cm-tap/n,app,ChanSpy,${CHANNEL}\,${ARG3},,,a)
 same => n,Return()
[cm-tap]
exten => _[0-9a-f].,1,Answer()
 same => n,AudioSocket(${EXTEN},127.0.0.1:9092)
 same => n,SoftHangup(${GLOBAL(CMTAP_${FILTER(0-9a-f,${EXTEN})})})
 same => n,Hangup()
"""


@pytest.mark.parametrize("path", ["ari", "dialplan"])
async def test_a_two_leg_call_reaches_the_monitor_as_one_call_with_two_speakers_warns_the_agent_and_halts(
    asterisk_root: Path, tmp_path: Path, path: str
) -> None:
    """Customer ↔ collector, two sipp phones each streaming real Mandarin, and ONE monitored call with two
    speakers. ``ari``: extension 301 → ``Stasis(compliance-monitor,PJSIP/agent,1001)``; the monitor's own ARI
    application (events websocket) dials the collector, snoops each leg into its AudioSocket server, then bridges
    the two. ``dialplan``: extension 302 taps each leg into its own AudioSocket (``DIALPLAN_302``), no ARI.
    The collector's speech says 交易 (the test rule pack's keyword); the customer's does not. The finding on the
    AGENT's speech makes the policy warn the collector: the tone is found in the RTP to the agent's phone and
    not in the customer's. A supervisor's halt over REST ends both legs: both sipp phones get a BYE."""
    for source, name in (
        (AUDIO / CLIP, "agent"),
        (REPO / "tests/data/real_speech/aishellsample_BAC009S0252W0100.flac", "cust"),
    ):
        done = _run("sox", str(source), "-r", "8000", "-c", "1", "-e", "u-law", str(tmp_path / f"{name}_ulaw.wav"))
        assert done.returncode == 0, done.stderr
    for scenario in ("uac_stream.xml", "uas_agent.xml"):  # the phones wait longer for the BYE: ASR on a busy CPU
        text = (CONFIGS / scenario).read_text()
        (tmp_path / scenario).write_text(
            text.replace('timeout="25000"', 'timeout="80000"').replace('timeout="40000"', 'timeout="80000"')
        )
    audiosocket_port = free_port()
    settings = make_settings(
        tmp_path,
        audiosocket={"port": audiosocket_port},
        ingest={"idle_timeout_s": 60},
        ari={
            "url": "http://127.0.0.1:8088/ari" if path == "ari" else None,
            "user": "scout",
            "password": "scoutpass",
            "audiosocket_host": f"127.0.0.1:{audiosocket_port}",
            "warn_s": 3.0,
            "reconnect_max_s": 1.0,
        },
    )
    ports = {"agent": free_port() & ~1, "cust": free_port() & ~1}
    dialplan, extension = (
        (STASIS_301, "301") if path == "ari" else (DIALPLAN_302.replace("HTTPPORT", str(settings.server.port)), "302")
    )
    with LiveServer(settings) as server, Asterisk(asterisk_root, audiosocket_port, dialplan) as asterisk:
        ari = server.app.state.ari
        for _ in range(120 if ari else 0):  # the monitor's ARI application reconnects until Asterisk's ARI answers
            if ari.connects:
                break
            await asyncio.sleep(0.5)
        assert path != "ari" or ari.connects, "the monitor never connected to Asterisk's ARI events websocket"
        async with (
            httpx.AsyncClient(base_url=server.http, timeout=30) as client,
            record_feed(f"{server.ws}/ws/console") as console,
        ):
            captures = {
                leg: await asyncio.create_subprocess_exec(
                    *("tcpdump", "-i", "lo", "-U", "-w", str(tmp_path / f"{leg}.pcap"), f"udp port {mp}"),
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
                for leg, mp in ports.items()
            }
            await asyncio.sleep(1)
            phones = {
                "agent": await asyncio.create_subprocess_exec(
                    *("sipp", "-sf", "uas_agent.xml", "-p", "5080", "-mi", "127.0.0.1", "-mp", str(ports["agent"])),
                    *("-m", "1", "-nostdin", "-timeout", "150"),
                    cwd=tmp_path,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.PIPE,
                )
            }
            await asyncio.sleep(1)
            phones["cust"] = await asyncio.create_subprocess_exec(
                *("sipp", "-sf", "uac_stream.xml", "-s", extension, "127.0.0.1:5060", "-p", str(free_port())),
                *("-mi", "127.0.0.1", "-mp", str(ports["cust"]), "-m", "1", "-nostdin", "-timeout", "150"),
                cwd=tmp_path,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            try:
                events = await console.wait_for(lambda ev: any(e["type"] == "call_started" for e in ev), 30)
                [started] = [e for e in events if e["type"] == "call_started"]
                call_id = started["call_id"]
                assert sorted(started["speakers"]) == ["agent", "customer"] and started["agent_id"] == "1001"
                events = await console.wait_for(
                    lambda ev: any(e["type"] == "action_outcome" and e["action"] == "warn_collector" for e in ev), 90
                )
                findings = [e for e in events if e["type"] == "finding"]
                assert findings and {f["speaker"] for f in findings} == {"agent"}, findings
                [warned] = [e for e in events if e["type"] == "action_outcome" and e["action"] == "warn_collector"]
                assert warned["outcome"] == "done", warned
                finals = {e["speaker"] for e in events if e["type"] == "transcript" and e["final"] and e["text"]}
                if finals != {"agent", "customer"}:  # the customer's digits may come after the agent's finding
                    try:
                        await console.wait_for(
                            lambda ev: any(
                                e["type"] == "transcript" and e["final"] and e["text"] and e["speaker"] == "customer"
                                for e in ev
                            ),
                            60,
                        )
                    except TimeoutError:
                        pytest.fail("no final transcript of the customer's speech")
                assert list(server.app.state.monitor.calls) == [call_id]  # one call, not one per leg
                halted = await client.post(f"/api/calls/{call_id}/halt", json={"reason": "supervisor halt"})
                assert halted.json()["outcome"] == "done", halted.text
                for name, phone in phones.items():
                    _, err = await asyncio.wait_for(phone.communicate(), 30)
                    assert phone.returncode == 0, f"{name} sipp did not get its BYE: {err.decode()[-1500:]}"
                await console.wait_call_ended(call_id, 30)
            except BaseException:  # what the PBX held and logged, and what the customer's phone sent, then
                capture = tmp_path / "cust.pcap"
                sent = len(rtp_payloads(capture)) - len(rtp_payloads(capture, dst_port=ports["cust"]))
                print(f"{sent} RTP packets from the customer's phone\n{asterisk.state()}")
                raise
            finally:
                for phone in phones.values():
                    if phone.returncode is None:
                        phone.kill()
                        await phone.wait()
                for capture in captures.values():
                    capture.terminate()
                    await asyncio.wait_for(capture.wait(), 10)
            call = (await client.get(f"/api/calls/{call_id}")).json()
    assert call["call"]["bridge"] == "audiosocket" and call["call"]["end_reason"] == "halted"
    assert {s["speaker"] for s in call["segments"]} == {"agent", "customer"}
    outcomes = {(a["action"], a["outcome"]) for a in call["actions"]}
    assert ("warn_collector", "done") in outcomes and ("halt_call", "done") in outcomes
    to_agent = tone_seconds(rtp_payloads(tmp_path / "agent.pcap", dst_port=ports["agent"]))
    to_customer = tone_seconds(rtp_payloads(tmp_path / "cust.pcap", dst_port=ports["cust"]))
    print(f"{path}: policy warning tone {to_agent:.2f} s to the agent, {to_customer:.2f} s to the customer")
    # ARI whispers a repeating tone for ari.warn_s (3 s); the AudioSocket tap plays the two 180 ms beeps (0.36 s).
    assert to_agent >= (0.6 if path == "ari" else 0.25) and to_customer == 0.0
