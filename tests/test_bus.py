"""The Redis Streams bus with a real redis-server on loopback: two `fogreid run --publish`
edge processes, one `fogreid associate` matcher killed mid-stream and restarted."""

import itertools
import json
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from fogreid.data.synth_video import CityConfig, make_city
from fogreid.errors import FogreidError
from fogreid.runtime.bus import GROUP, decode, parse_bus_url

from conftest import make_checkpoint

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


@pytest.fixture
def reaper():
    """Processes a failed test leaves behind (perhaps stopped with SIGSTOP) are killed, not orphaned."""
    procs = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


CITY = CityConfig(cameras=2, vehicles=3, seconds=7.0, fps=8.0, height=144, width=256, fog=(1.0, 3.0),
                  cross=(2.0, 2.5), transit=(0.5, 1.0))  # as tests/test_mtmc.py


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
    """{key: global id} as a set of groups of keys, whatever the ids' numbers."""
    groups = {}
    for track, gid in pairs.items():
        groups.setdefault(gid, set()).add(track)
    return {frozenset(g) for g in groups.values()}


@pytest.mark.slow
def test_two_edges_one_matcher_killed_and_restarted(city, redis_url, fogreid_cmd, tmp_path, reaper):
    model, cams = city
    url, client = redis_url
    stream = parse_bus_url(url).stream
    client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    # a consumer that reads the first entries and dies without acknowledging them: they stay pending
    # (it blocks first, so Redis serves it first) ...
    ghost = []
    reader = threading.Thread(target=lambda: ghost.extend(redis.Redis(port=client.connection_pool.connection_kwargs[
        "port"]).xreadgroup(GROUP, "ghost", {stream: ">"}, count=10, block=240_000)))
    reader.start()
    time.sleep(0.5)
    # ... the matcher, started before the edges so that it works while they publish, takes them over
    # (XAUTOCLAIM, idle > 1 s) and is killed mid-stream
    matcher_cmd = fogreid_cmd + ["associate", "--bus", url, "--expect-sources", "2"]
    first = subprocess.Popen(matcher_cmd + ["--consumer", "m1", "--claim-idle", "1"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    reaper.append(first)
    assert "[associate]" in first.stderr.readline()   # connected
    edges = [subprocess.Popen(fogreid_cmd + ["run", "--model", str(model), "--source", str(video), "--detections",
                                            str(det), "--fps", "8", "--publish", url],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for video, det in zip(cams["videos"], cams["det"], strict=True)]
    reaper.extend(edges)
    deadline = time.time() + 240
    def holding() -> int:   # entries the matcher has read and not yet acknowledged
        return sum(c["pending"] for c in client.xpending(stream, GROUP)["consumers"] if c["name"] == b"m1")

    def wait_for(condition, what):
        while not condition():
            assert time.time() < deadline and first.poll() is None, f"timed out waiting for {what}"
            time.sleep(0.01)

    # Mid-stream by construction, not by luck: once the matcher has produced results, pause camera 1.
    # Its clock stops, so camera 0's newer entries must wait (held, unacknowledged) for it, and the
    # matcher, frozen before the kill, provably holds some when it dies.
    wait_for(lambda: client.xlen(f"{stream}:global") >= 10, "the first results")
    edges[1].send_signal(signal.SIGSTOP)
    wait_for(holding, "the matcher to hold entries")
    first.send_signal(signal.SIGSTOP)
    while not holding():   # acknowledged its last one just before the freeze: let it read another
        assert time.time() < deadline, "the matcher never held an entry while frozen"
        first.send_signal(signal.SIGCONT)
        time.sleep(0.05)
        first.send_signal(signal.SIGSTOP)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    edges[1].send_signal(signal.SIGCONT)
    done_before_kill = client.xlen(f"{stream}:global")
    pending_at_kill = client.xpending(stream, GROUP)["pending"]
    sent = 0
    for edge in edges:
        out, err = edge.communicate(timeout=300)
        assert edge.returncode == 0, err
        stats = json.loads(out.strip().splitlines()[-1])
        sent += stats["crops"] + stats["tracks"] + 1   # every detection, every track's end, the source's end
    total = client.xlen(stream)
    assert total == sent
    assert 0 < done_before_kill < total, "the matcher must die mid-stream"
    reader.join(timeout=60)
    ghost_ids = [entry_id for _, entries in ghost for entry_id, _ in entries]
    assert ghost_ids and pending_at_kill > 0

    time.sleep(1.0)   # what the killed matcher held is now idle for longer than the restart's --claim-idle
    second = subprocess.run(matcher_cmd + ["--consumer", "m2", "--claim-idle", "1", "--idle-exit", "3"],
                            capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    summary = json.loads(second.stdout.strip().splitlines()[-1])
    assert summary["replayed"] == done_before_kill and summary["claimed"] == pending_at_kill

    entries = {k.decode(): f for k, f in client.xrange(stream)}
    results = [json.loads(f[b"result"]) for _, f in client.xrange(f"{stream}:global")]
    processed = [r["input_id"] for r in results]
    assert len(processed) == len(set(processed)) == len(entries) == total   # once each: none lost, none doubled
    assert set(processed) == set(entries) >= {i.decode() for i in ghost_ids}
    assert client.xpending(stream, GROUP)["pending"] == 0
    print(f"\nbus fault test: {total} events from 2 edges, {done_before_kill} done before SIGKILL, "
          f"{pending_at_kill} pending at the kill, restart replayed "
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
    # detections are the same in both runs (public detections); track numbers are not (ByteTrack numbers
    # tracks per process), so compare which detections share a global id
    local = {(e["source"], e["frame"], tuple(e["box"])): e["global_id"] for e in
             map(json.loads, events.read_text().splitlines()) if e["event"] == "detection"}
    central = {(r["source"], r["frame"], tuple(r["box"])): r["global_id"] for r in results
               if r["event"] == "detection"}
    assert central.keys() == local.keys()
    pairs = list(itertools.combinations(sorted(central), 2))
    agree = sum((central[a] == central[b]) == (local[a] == local[b]) for a, b in pairs) / len(pairs)
    print(f"single-process vs bus: {len(track_partition(local))} / {len(track_partition(central))} groups of "
          f"detections; pairwise agreement (Rand index) {agree:.4f}")
    assert track_partition(central) == track_partition(local)
    print(f"global ids: {len(central)} detections in {len(track_partition(central))} groups (vehicles, and "
          f"undecided first crops), the same grouping as the single-process run")
