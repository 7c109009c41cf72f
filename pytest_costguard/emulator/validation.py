"""Request validation: reject what the Messages API would reject, with its status and message."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .cache import TTL_SECONDS
from .errors import ApiError

__all__ = ["validate_request"]


def _require(body: Mapping[str, Any], key: str) -> Any:
    if key not in body:
        raise ApiError(400, f"{key}: Field required")
    return body[key]


def _check_cache_control(value: Any, where: str) -> None:
    if value is None:
        return
    if not isinstance(value, Mapping) or value.get("type") != "ephemeral":
        raise ApiError(400, f"{where}.cache_control: Input tag does not match the expected tag 'ephemeral'")
    ttl = value.get("ttl", "5m")
    if ttl not in TTL_SECONDS:
        raise ApiError(400, f"{where}.cache_control.ttl: Input should be '5m' or '1h'")


def _check_block(block: Any, where: str) -> None:
    if not isinstance(block, Mapping) or not isinstance(block.get("type"), str):
        raise ApiError(400, f"{where}: Input should be a valid dictionary with a 'type'")
    if block["type"] == "text":
        text = block.get("text")
        if not isinstance(text, str):
            raise ApiError(400, f"{where}.text: Input should be a valid string")
        if not text:
            raise ApiError(400, "messages: text content blocks must be non-empty")
    _check_cache_control(block.get("cache_control"), where)


def validate_request(body: Any, *, for_count: bool = False) -> None:
    """Raise `ApiError` (400) when `body` is not a request the Messages API would accept."""
    if not isinstance(body, Mapping):
        raise ApiError(400, "Request body must be a JSON object")
    model = _require(body, "model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "model: Input should be a valid string")
    if not for_count:
        max_tokens = _require(body, "max_tokens")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
            raise ApiError(400, "max_tokens: Input should be a valid integer")
        if max_tokens < 1:
            raise ApiError(400, "max_tokens: Input should be greater than or equal to 1")
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise ApiError(400, "stream: Input should be a valid boolean")
        temperature = body.get("temperature")
        if temperature is not None and (
            not isinstance(temperature, (int, float))
            or isinstance(temperature, bool)
            or not 0 <= temperature <= 1
        ):
            raise ApiError(400, "temperature: Input should be a number between 0 and 1")
    messages = _require(body, "messages")
    if not isinstance(messages, list):
        raise ApiError(400, "messages: Input should be a valid list")
    if not messages:
        raise ApiError(400, "messages: at least one message is required")
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(message, Mapping):
            raise ApiError(400, f"{where}: Input should be a valid dictionary")
        if message.get("role") not in ("user", "assistant"):
            raise ApiError(400, f"{where}.role: Input should be 'user' or 'assistant'")
        if "content" not in message:
            raise ApiError(400, f"{where}.content: Field required")
        content = message["content"]
        if isinstance(content, list):
            for j, block in enumerate(content):
                _check_block(block, f"{where}.content.{j}")
        elif not isinstance(content, str):
            raise ApiError(400, f"{where}.content: Input should be a valid string or list")
        last_assistant = i == len(messages) - 1 and message["role"] == "assistant"
        if not content and not last_assistant:
            raise ApiError(
                400,
                f"{where}: all messages must have non-empty content "
                "except for the optional final assistant message",
            )
    system = body.get("system")
    if isinstance(system, list):
        for j, block in enumerate(system):
            _check_block(block, f"system.{j}")
            if block["type"] != "text":
                raise ApiError(400, f"system.{j}.type: Input should be 'text'")
    elif system is not None and not isinstance(system, str):
        raise ApiError(400, "system: Input should be a valid string or list")
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise ApiError(400, "tools: Input should be a valid list")
        for j, tool in enumerate(tools):
            if not isinstance(tool, Mapping) or not isinstance(tool.get("name"), str) or not tool["name"]:
                raise ApiError(400, f"tools.{j}.name: Field required")
            _check_cache_control(tool.get("cache_control"), f"tools.{j}")
    _check_cache_control(body.get("cache_control"), "cache_control")
