"""The start-up check's reading of process 0's keys, against a scripted key-value store."""

import json

from jaxrl_dist.run import shared_dir


class RacingClient:
    """A key-value store in which process 0 publishes its token, then its result, just
    after process 1's first read of the token: the interleaving that once let process 1
    take "result there, no token" for "process 0 stopped before writing"."""

    def __init__(self, token_path: str):
        self.store: dict[str, str] = {}
        self.token = json.dumps({"nonce": "abc", "path": token_path})
        self.token_reads = 0

    def key_value_try_get(self, key: str) -> str:
        value = self.store.get(key)
        if key.endswith("token"):
            self.token_reads += 1
            if self.token_reads == 1:
                self.store[shared_dir._KEYS + "token"] = self.token
                self.store[shared_dir._KEYS + "result/0"] = shared_dir._OK
        if value is None:
            import jax

            raise jax.errors.JaxRuntimeError("NOT_FOUND")
        return value


def test_a_token_published_between_two_reads_is_still_checked(tmp_path):
    theirs = tmp_path / "a" / shared_dir.TOKEN
    mine = tmp_path / "b" / shared_dir.TOKEN
    client = RacingClient(str(theirs))
    outcome = shared_dir._see_token(client, str(mine), 1, timeout_s=0.2, poll_s=0.01,
                                    deadline=1e18)
    assert outcome.startswith(f"--workdir={tmp_path / 'a'} is not one shared directory: "
                              "process 1 does not see process 0's token file")


def test_a_result_without_a_token_means_process_0_stopped(tmp_path):
    client = RacingClient(str(tmp_path / shared_dir.TOKEN))
    client.token_reads = 1  # process 0 publishes nothing more
    client.store[shared_dir._KEYS + "result/0"] = "process 0: error: bad flag"
    assert shared_dir._see_token(client, str(tmp_path / shared_dir.TOKEN), 1,
                                 timeout_s=0.2, poll_s=0.01, deadline=1e18) == shared_dir._OK


def test_a_token_in_the_shared_directory_is_seen(tmp_path):
    path = tmp_path / shared_dir.TOKEN
    path.write_text("abc")
    client = RacingClient(str(path))
    assert shared_dir._see_token(client, str(path), 1, timeout_s=0.2, poll_s=0.01,
                                 deadline=1e18) == shared_dir._OK
