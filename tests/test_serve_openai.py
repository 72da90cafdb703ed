"""`align serve` answers OpenAI completions and chat completions on loopback."""

from __future__ import annotations

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
