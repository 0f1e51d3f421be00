"""The Redis Streams bus with a real redis-server on loopback: two `fogreid run --publish`
edge processes, one `fogreid associate` matcher killed mid-stream and restarted."""

import json
import shutil
import signal
import socket
import subprocess
import time

import numpy as np
import pytest

from conftest import make_checkpoint
from fogreid.data.synth_video import CityConfig, make_city
from fogreid.errors import FogreidError
from fogreid.runtime.bus import GROUP, decode, parse_bus_url

REDIS_SERVER = shutil.which("redis-server")
redis = pytest.importorskip("redis", reason="redis-py is in the dev extra")
pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="needs Debian's redis-server (.ci/run installs it)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def redis_url(tmp_path):
    port = free_port()
    server = subprocess.Popen([REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/cams", client
    server.terminate()
    server.wait(timeout=10)


CITY = CityConfig(cameras=2, vehicles=3, seconds=7.0, fps=8.0, height=144, width=256, fog=(1.0, 3.0),
                  cross=(2.0, 2.5), transit=(0.5, 1.0))


@pytest.fixture(scope="module")
def city(synth_root, tmp_path_factory):
    """Two cameras of the generated city (public detections: tracks), and a model."""
    from fogreid.export.exporter import ExportOptions, export
    from fogreid.export.formats import parse_formats

    root = tmp_path_factory.mktemp("city")
    ckpt = make_checkpoint(root / "edge.pt", synth_root)
    model = export(ckpt, parse_formats("onnx"), root / "model", ExportOptions(progress=False)).files["onnx"]
    return model, make_city(root / "city", CITY)


def test_bus_url_parsing():
    url = parse_bus_url("redis://10.0.0.5:6380/city?db=2")
    assert (url.host, url.port, url.stream, url.db, url.results) == ("10.0.0.5", 6380, "city", 2, "city:global")
    for bad in ("redis://host", "http://host/s", "redis://host:port/s"):
        with pytest.raises(FogreidError, match="--bus"):
            parse_bus_url(bad)


def test_unreachable_bus_is_an_environment_error(fogreid_cmd, tmp_path):
    run = subprocess.run(fogreid_cmd + ["associate", "--bus", f"redis://127.0.0.1:{free_port()}/x"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and "cannot reach Redis" in run.stderr and "Traceback" not in run.stderr


def replay_in_process(entries, order):
    """A single process that never stopped: the same entries, through the same association."""
    from fogreid.runtime.association import AssociationConfig, CrossCameraAssociator
    from fogreid.runtime.bus import EventFeed

    feed = EventFeed(CrossCameraAssociator(AssociationConfig()))
    return {key: feed.global_id(key, *decode(entries[key])[:2]) for key in order}


def track_partition(pairs):
    """{(camera, track): global id} as a set of groups of tracks, whatever the ids' numbers."""
    groups = {}
    for track, gid in pairs.items():
        groups.setdefault(gid, set()).add(track)
    return {frozenset(g) for g in groups.values()}


@pytest.mark.slow
def test_two_edges_one_matcher_killed_and_restarted(city, redis_url, fogreid_cmd, tmp_path):
    model, cams = city
    url, client = redis_url
    stream = parse_bus_url(url).stream
    client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    edges = [subprocess.Popen(fogreid_cmd + ["run", "--model", str(model), "--source", str(video), "--detections",
                                            str(det), "--fps", "8", "--publish", url],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for video, det in zip(cams["videos"], cams["det"])]
    deadline = time.time() + 240
    while client.xlen(stream) < 20 and time.time() < deadline:
        time.sleep(0.05)
    # a consumer that reads and dies without acknowledging: its entries stay pending ...
    ghost = client.xreadgroup(GROUP, "ghost", {stream: ">"}, count=10)
    ghost_ids = [entry_id for _, entries in ghost for entry_id, _ in entries]
    # ... and the real matcher (which leaves the ghost's entries alone: --claim-idle 60) killed mid-stream,
    # while the edges still publish
    matcher_cmd = fogreid_cmd + ["associate", "--bus", url]
    first = subprocess.Popen(matcher_cmd + ["--consumer", "m1", "--claim-idle", "60"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    while client.xlen(f"{stream}:global") < 40 and time.time() < deadline and first.poll() is None:
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    done_before_kill = client.xlen(f"{stream}:global")
    pending_at_kill = client.xpending(stream, GROUP)["pending"]
    sent = 0
    for edge in edges:
        out, err = edge.communicate(timeout=300)
        assert edge.returncode == 0, err
        stats = json.loads(out.strip().splitlines()[-1])
        sent += stats["crops"] + stats["tracks"]    # every detection, and every track's end
    total = client.xlen(stream)
    assert total == sent
    assert 0 < done_before_kill < total, "the matcher must die mid-stream"
    assert len(ghost_ids) == 10 and pending_at_kill >= 10

    time.sleep(1.0)   # the ghost's entries are now idle for longer than the restarted matcher's --claim-idle
    second = subprocess.run(matcher_cmd + ["--consumer", "m2", "--claim-idle", "1", "--idle-exit", "3"],
                            capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    summary = json.loads(second.stdout.strip().splitlines()[-1])
    assert summary["replayed"] == done_before_kill and summary["claimed"] >= pending_at_kill

    entries = {k.decode(): f for k, f in client.xrange(stream)}
    results = [json.loads(f[b"result"]) for _, f in client.xrange(f"{stream}:global")]
    processed = [r["input_id"] for r in results]
    assert len(processed) == len(set(processed)) == len(entries) == total   # once each: none lost, none doubled
    assert set(processed) == set(entries)
    assert client.xpending(stream, GROUP)["pending"] == 0
    print(f"\nbus fault test: {total} events from 2 edges, {done_before_kill} done before SIGKILL, "
          f"{pending_at_kill} pending at the kill (10 of a dead 'ghost' consumer), restart replayed "
          f"{summary['replayed']}, re-claimed {summary['claimed']}, processed {summary['processed']}; "
          f"{len(processed)} results, {len(set(processed))} distinct")

    # global ids: the same as one process that saw the same entries in the same order and never stopped
    got = {r["input_id"]: r["global_id"] for r in results}
    assert got == replay_in_process(entries, processed)

    # and the same vehicles as `fogreid run` with both cameras in one process (no bus)
    events = tmp_path / "single.jsonl"
    single = subprocess.run(fogreid_cmd + ["run", "--model", str(model), "--source", *map(str, cams["videos"]),
                                           "--detections", *map(str, cams["det"]), "--fps", "8", "--events",
                                           str(events)], capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    local = {(e["source"], e["track_id"]): e["global_id"] for e in map(json.loads, events.read_text().splitlines())
             if e["event"] == "detection" and e["global_id"] is not None}
    central = {(r["source"], r["track_id"]): r["global_id"] for r in results
               if r["event"] == "detection" and r["global_id"] is not None}
    assert central.keys() == local.keys()
    assert track_partition(central) == track_partition(local)
    print(f"global ids: {len(central)} tracks in {len(track_partition(central))} vehicles, the same grouping as "
          f"the single-process run")
