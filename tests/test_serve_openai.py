"""`align serve` answers OpenAI completions and chat completions on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def openai_client(vllm_server):
    from openai import OpenAI

    return OpenAI(base_url=f"http://127.0.0.1:{vllm_server.port}/v1", api_key=vllm_server.api_key)


def test_serve_answers_completions(openai_client, vllm_server):
    response = openai_client.completions.create(
        model=vllm_server.served_model_name,
        prompt="What is 12 + 30?",
        max_tokens=8,
        temperature=0,
        logprobs=0,
    )
    (choice,) = response.choices
    assert response.usage.completion_tokens == len(choice.logprobs.token_logprobs) > 0
    assert all(lp <= 0 for lp in choice.logprobs.token_logprobs)


def test_serve_answers_chat_completions(openai_client, vllm_server):
    response = openai_client.chat.completions.create(
        model=vllm_server.served_model_name,
        messages=[{"role": "user", "content": "你好"}],
        max_tokens=8,
        temperature=0,
    )
    (choice,) = response.choices
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    assert response.usage.prompt_tokens > 3  # the chat template wrapped the message


def test_serve_refuses_a_request_without_the_api_key(vllm_server):
    from openai import AuthenticationError, OpenAI

    client = OpenAI(base_url=f"http://127.0.0.1:{vllm_server.port}/v1", api_key="wrong")
    with pytest.raises(AuthenticationError):
        client.completions.create(model=vllm_server.served_model_name, prompt="hi", max_tokens=2)


def test_serve_rejects_a_directory_without_a_model(tmp_path):
    from align.cli import main

    assert main(["serve", str(tmp_path)]) == 2


def test_tensor_parallelism_reaches_the_vllm_command_line(tiny_model_dir):
    from align.serve import ServeConfig, server_settings
    from rollouts.server import serve_command

    single = serve_command(server_settings(ServeConfig(checkpoint=tiny_model_dir)))
    split = serve_command(server_settings(ServeConfig(checkpoint=tiny_model_dir, tensor_parallel_size=4)))
    assert "--tensor-parallel-size" not in single
    assert split[split.index("--tensor-parallel-size") + 1] == "4"


RL_ROUTES = [
    ("POST", "/pause"),
    ("POST", "/resume"),
    ("POST", "/reset_prefix_cache"),
    ("POST", "/init_weight_transfer_engine"),
    ("POST", "/start_weight_update"),
    ("POST", "/update_weights"),
    ("POST", "/finish_weight_update"),
    ("GET", "/is_paused"),
    ("GET", "/weight_updates"),
    ("GET", "/metrics"),
]


def _status(url: str, method: str, body: dict | None = None, api_key: str | None = None) -> int:
    import json
    import urllib.error
    import urllib.request

    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    data = json.dumps(body or {}).encode() if method == "POST" else None
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


@pytest.mark.parametrize(("method", "route"), RL_ROUTES)
def test_every_route_but_health_needs_the_key(vllm_server, method, route):
    base = f"http://127.0.0.1:{vllm_server.port}"
    assert _status(base + route, method) == 401
    assert _status(base + route, method, api_key="wrong") == 401
    assert _status(base + "/health", "GET") == 200


def test_a_bad_weight_update_is_refused_and_the_model_keeps_serving(
    openai_client, vllm_server, tiny_model_dir
):
    from rollouts.server import request_json

    base = f"http://127.0.0.1:{vllm_server.port}"

    def answer() -> str:
        response = openai_client.chat.completions.create(
            model=vllm_server.served_model_name,
            messages=[{"role": "user", "content": "What is 12 + 30?"}],
            max_tokens=12,
            temperature=0,
        )
        return response.choices[0].message.content

    before = answer()
    weight_dir = Path(request_json(base + "/weight_updates", None, vllm_server.api_key)["path"])
    assert weight_dir.is_dir() and weight_dir.stat().st_mode & 0o077 == 0  # private to its owner
    whole = (tiny_model_dir / "model.safetensors").read_bytes()
    truncated = weight_dir / "truncated.safetensors"
    truncated.write_bytes(whole[: len(whole) // 2])
    (weight_dir / "sub").mkdir(exist_ok=True)
    try:
        for path in [
            str(tiny_model_dir / "model.safetensors"),  # a real file, outside the transfer directory
            str(weight_dir / "missing.safetensors"),
            str(weight_dir / ".." / weight_dir.name / ".." / "x.safetensors"),
            str(truncated),
            str(weight_dir / "sub"),
        ]:
            body = {"update_info": {"path": path}}
            assert _status(base + "/update_weights", "POST", body, vllm_server.api_key) == 400, path
        assert _status(base + "/update_weights", "POST", {"nothing": 1}, vllm_server.api_key) == 400
    finally:
        truncated.unlink()
        (weight_dir / "sub").rmdir()
    assert _status(base + "/health", "GET") == 200
    assert answer() == before


def test_the_key_travels_in_the_environment_not_on_the_command_line(tiny_model_dir):
    from align.serve import ServeConfig, server_settings
    from rollouts.server import serve_command, server_environment
    from rollouts.server_guard import KEY_ENV

    settings = server_settings(ServeConfig(checkpoint=tiny_model_dir, api_key="s3cret"))
    assert not any("s3cret" in arg for arg in serve_command(settings))
    env = server_environment(settings)
    assert env["VLLM_API_KEY"] == env[KEY_ENV] == "s3cret"
