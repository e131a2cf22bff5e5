"""A hub model name with no local copy and no reachable hub fails fast with the loader's message (issue 21, item 5):
one HTTP request (3 s at most) instead of huggingface_hub's minute of retries; HF_HUB_OFFLINE=1 at once.
Times exclude imports: transformers imports its Auto classes lazily (seconds on a busy machine), so one offline
attempt runs before the clock starts."""
import socket
import time

import pytest

from bench.errors import BenchError
from bench.models import loading


@pytest.fixture(autouse=True)
def _fresh_memo():
    loading._HUB_DOWN.clear()
    yield
    loading._HUB_DOWN.clear()


@pytest.fixture(scope="module", autouse=True)
def _imports_done():
    # huggingface_hub reads HF_HUB_OFFLINE once, when first imported: import it before the variable is set here,
    # or every later test of the session would see an offline hub
    import huggingface_hub  # noqa: F401
    import transformers  # noqa: F401

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        with pytest.raises(BenchError):
            loading.load_hf("org-that-does-not-exist/bert-nothing")


def _fails_within(seconds: float, name: str = "org-that-does-not-exist/bert-nothing") -> str:
    t0 = time.perf_counter()
    with pytest.raises(BenchError) as err:
        loading.load_hf(name)
    elapsed = time.perf_counter() - t0
    assert elapsed < seconds, f"took {elapsed:.1f} s"
    assert "no local copy and the model hub is not reachable" in str(err.value)
    return str(err.value)


@pytest.fixture
def silent_endpoint():
    """A server that accepts TCP connections and never answers (a hub behind a dropping firewall)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:9", "silent", "https://no-such-host.invalid"],
                         ids=["refused", "silent", "unknown-host"])  # fmt: skip
def test_unreachable_hub_fails_in_under_5_seconds(monkeypatch, endpoint, request):
    if endpoint == "silent":
        endpoint = request.getfixturevalue("silent_endpoint")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    message = _fails_within(5.0)
    assert "saved with save_pretrained" in message  # says what to do
    assert loading._HUB_DOWN[endpoint]  # asked once, remembered for the next model of the run


def test_hf_hub_offline_fails_at_once(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://10.255.255.1")
    _fails_within(1.0)
    assert not loading._HUB_DOWN  # not even one connection attempt
