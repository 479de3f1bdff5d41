"""The studio on a Ray cluster (engines/cluster.py): a real local cluster from Ray's own
`cluster_utils` (a head node the studio attaches to, and worker nodes with a `speech` resource added
and removed as the test goes), the studio as a user runs it with STUDIO_RAY_ADDRESS.

Where each sentence was made is read from /health (each node's count of sentences it made).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from studio.audio import decode
from studio.services.asr import Transcriber, word_error_rate
from tests.conftest import LiveServer, wait_for_task

cluster_utils = pytest.importorskip("ray.cluster_utils", reason="the ray pip package is not installed")

SPEECH_NODE = {"num_cpus": 1, "resources": {"speech": 1}}  # one Kokoro host fits
TURNS = [
    "Good morning, did you sleep well?",
    "Not really, the storm kept me awake.",
    "I heard the thunder around midnight.",
    "The power went out for an hour.",
    "Did you lose anything in the fridge?",
    "Only the ice cream, sadly.",
    "We can buy more this afternoon.",
    "Then let us go after lunch.",
]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    # Only the head exists when the studio connects, so the studio attaches to it and survives the
    # worker nodes it will lose.
    made = cluster_utils.Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    yield made
    made.shutdown()


@pytest.fixture(scope="module")
def studio(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {
        "STUDIO_RAY_ADDRESS": cluster.address,
        "STUDIO_RAY_ENGINES": "kokoro",
        "STUDIO_RAY_RESOURCES": json.dumps({"kokoro": {"speech": 1}, "voice-fit": {"fitting": 1}}),
        "STUDIO_SPEECH_CACHE_MB": "0",  # every request is made, on a node
        "STUDIO_FIT_QUICK_TRIALS": "4",  # fits here are about where they run, not how alike they get
    }
    server = LiveServer(tmp_path_factory.mktemp("cluster"), env=env).start(timeout=180)
    yield server
    server.stop()


def nodes(studio: LiveServer) -> dict[str, dict[str, Any]]:
    report = httpx.get(f"{studio.url}/health", timeout=30).json()["cluster"]
    assert report["address"]
    return {node["id"]: node for node in report["nodes"]}


def made_on(studio: LiveServer) -> dict[str, int]:
    return {node: info["sentences"] for node, info in nodes(studio).items() if info["sentences"]}


def test_speech_is_made_on_the_node_that_offers_what_the_engine_needs(
    cluster: Any, studio: LiveServer, transcriber: Transcriber
) -> None:
    assert made_on(studio) == {}
    node_a = cluster.add_node(**SPEECH_NODE)
    cluster.wait_for_nodes()
    text = "The ferry leaves at noon. Please be on time."
    response = httpx.post(
        f"{studio.url}/api/v1/tts/synthesize",
        json={"text": text, "voice_id": "jm_kumo", "format": "wav"},
        timeout=300,
    )
    assert response.status_code == 200, response.text
    audio, rate = decode(response.content)
    assert len(audio) / rate > 1.5 and float(np.sqrt(np.mean(audio**2))) > 0.01
    assert word_error_rate(text, transcriber.transcribe(audio, rate, "en").text) <= 0.2
    assert made_on(studio) == {node_a.node_id: 2}  # both sentences, on the one node with `speech`
    assert nodes(studio)[node_a.node_id]["engines"] == ["kokoro"]
    assert nodes(studio)[cluster.head_node.node_id]["engines"] == []


def test_a_dialogue_goes_on_on_another_node_when_its_node_is_lost(cluster: Any, studio: LiveServer) -> None:
    (node_a,) = cluster.worker_nodes
    node_b = cluster.add_node(**SPEECH_NODE)
    cluster.wait_for_nodes()
    before = made_on(studio)
    script = "\n".join(f"[S{i % 2 + 1}] {line}" for i, line in enumerate(TURNS))
    with httpx.Client(base_url=studio.url, timeout=60) as client:
        task = client.post(
            "/api/v1/dialogue", json={"script": script, "voices": {"S1": "jm_kumo", "S2": "jf_alpha"}}
        ).json()
        turns = studio.data_dir / "tasks" / task["task_id"] / "_turns"
        finished = wait_for_turns(turns, 2)
        kept = {path.name: path.stat().st_mtime_ns for path in finished}
        cluster.remove_node(node_a, allow_graceful=False)  # mid-dialogue, as a machine dies
        done = wait_for_task(client, task["task_id"], timeout=300)
    assert done["status"] == "completed", done
    for name, mtime in kept.items():  # what was finished on the lost node was not made again
        assert (turns / name).stat().st_mtime_ns == mtime
    made = {node: count - before.get(node, 0) for node, count in made_on(studio).items()}
    print(
        f"\nsentences made per node: lost node {made.get(node_a.node_id)}, other {made.get(node_b.node_id)}"
    )
    assert set(made) == {node_a.node_id, node_b.node_id}
    assert made[node_a.node_id] >= len(kept) and made[node_b.node_id] >= 1
    assert sum(made.values()) == len(TURNS)  # every sentence made once: none twice, none lost
    assert nodes(studio)[node_b.node_id]["engines"] == ["kokoro"]
    deadline = time.monotonic() + 60  # Ray marks a node lost after its missed heartbeats (~15 s)
    while nodes(studio)[node_a.node_id]["alive"]:
        assert time.monotonic() < deadline, "the lost node is still reported alive"
        time.sleep(1)


def test_cancel_stops_a_dialogue_running_on_a_remote_node(cluster: Any, studio: LiveServer) -> None:
    (node_b,) = cluster.worker_nodes
    script = "\n".join(f"[S{i % 2 + 1}] {line}" for i, line in enumerate(TURNS * 3))
    with httpx.Client(base_url=studio.url, timeout=60) as client:
        task = client.post(
            "/api/v1/dialogue", json={"script": script, "voices": {"S1": "jm_kumo", "S2": "jf_alpha"}}
        ).json()
        wait_for_turns(studio.data_dir / "tasks" / task["task_id"] / "_turns", 1)
        asked = time.monotonic()
        assert client.post(f"/api/v1/task/{task['task_id']}/cancel").status_code == 200
        done = wait_for_task(client, task["task_id"], timeout=30)
        assert done["status"] == "cancelled" and time.monotonic() - asked < 10, done
    settled = made_on(studio)[node_b.node_id]
    time.sleep(3)
    assert made_on(studio)[node_b.node_id] == settled  # nothing more is made on the node


@pytest.mark.slow
def test_voice_fits_run_on_nodes_for_them_survive_a_lost_node_and_cancel(
    cluster: Any, studio: LiveServer
) -> None:
    fitting = [cluster.add_node(num_cpus=1, resources={"fitting": 1}) for _ in range(2)]
    cluster.wait_for_nodes()
    with httpx.Client(base_url=studio.url, timeout=300) as client:
        # Two clips: the same clip would be fitted once (fits are cached by clip).
        for voice, turns in (("harbor", TURNS[:4]), ("harbor-2", TURNS[1:5])):
            clip = client.post(
                "/api/v1/tts/synthesize",
                json={"text": " ".join(turns), "voice_id": "jm_kumo", "format": "wav"},
            )
            assert clip.status_code == 200, clip.text
            made = client.post(
                "/api/v1/voices/upload",
                files={"voice_file": ("clip.wav", clip.content, "audio/wav")},
                data={"voice_id": voice, "fit": "none", "language": "en"},
            )
            assert made.status_code == 200, made.text

        # A fit under way on one node, that node lost: the fit runs again on the other and completes.
        task = client.post("/api/v1/voices/harbor/fit", json={"mode": "quick"}).json()
        wait_for_progress(client, task["task_id"])
        (lost,) = [node for node in fitting if "voice-fit" in nodes(studio)[node.node_id]["engines"]]
        (other,) = [node for node in fitting if node is not lost]
        cluster.remove_node(lost, allow_graceful=False)
        done = wait_for_task(client, task["task_id"], timeout=300)
        assert done["status"] == "completed", done
        assert done["result"]["similarity"] > 0.5 and done["result"]["trials"] == 4  # the studio's setting
        curve = client.get(f"/api/v1/task/{task['task_id']}/files/download/curve.json").json()
        assert len(curve) >= 2  # the progress the node reported came back to the task
        jobs = {node: info["jobs"] for node, info in nodes(studio).items() if info["jobs"]}
        assert jobs == {other.node_id: 1}  # finished there, and only there
        spoken = client.post("/api/v1/tts/synthesize", json={"text": "Hello there.", "voice_id": "harbor"})
        assert spoken.status_code == 200, spoken.text  # the fitted voice speaks (on the speech node)

        # Cancel reaches a fit running on a node: its host is killed there.
        task = client.post("/api/v1/voices/harbor-2/fit", json={"mode": "quick"}).json()
        wait_for_progress(client, task["task_id"])
        assert "voice-fit" in nodes(studio)[other.node_id]["engines"]
        asked = time.monotonic()
        assert client.post(f"/api/v1/task/{task['task_id']}/cancel").status_code == 200
        done = wait_for_task(client, task["task_id"], timeout=30)
        assert done["status"] == "cancelled" and time.monotonic() - asked < 10, done
        assert "voice-fit" not in nodes(studio)[other.node_id]["engines"]
        assert nodes(studio)[other.node_id]["jobs"] == 1
    cluster.remove_node(other, allow_graceful=False)


def wait_for_progress(client: httpx.Client, task_id: str, timeout: float = 300) -> None:
    """Until the task reports progress (its fit is under way on a node)."""
    deadline = time.monotonic() + timeout
    while (task := client.get(f"/api/v1/task/{task_id}").json())["progress"] <= 0:
        assert time.monotonic() < deadline and task["status"] in ("pending", "running"), task
        time.sleep(0.2)


def test_an_engine_no_node_can_host_is_a_clear_503(cluster: Any, studio: LiveServer) -> None:
    for node in list(cluster.worker_nodes):
        cluster.remove_node(node, allow_graceful=False)
    deadline = time.monotonic() + 60
    while any(info["alive"] and "speech" in info["resources"] for info in nodes(studio).values()):
        assert time.monotonic() < deadline, nodes(studio)
        time.sleep(1)
    response = httpx.post(
        f"{studio.url}/api/v1/tts/synthesize",
        json={"text": "Is anyone there?", "voice_id": "jm_kumo"},
        timeout=120,
    )
    assert response.status_code == 503, response.text
    assert "no Ray node" in response.text and "speech" in response.text
    assert httpx.get(f"{studio.url}/health").json()["status"] == "healthy"


def wait_for_turns(turns: Path, count: int, timeout: float = 180) -> list[Path]:
    """The first `count` finished turns (a turn is done when its .json is written)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = sorted(turns.glob("*.json"))
        if len(done) >= count:
            return done[:count]
        time.sleep(0.2)
    raise AssertionError(f"fewer than {count} turns in {timeout} s")
