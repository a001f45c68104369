"""`brainbus schema`: JSON Schema of every message, an AsyncAPI document of the subjects, and the
wire format, so clients in any language can be generated or written by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from bus import codec
from bus.models import registered

__all__ = ["asyncapi", "write_schema"]

_WORLD_IN = {"stim.text", "stim.vector", "env.actions", "feedback.reward"}


def asyncapi(namespace: str = "brain") -> dict[str, Any]:
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for cls in registered():
        name = cls.TYPE
        # Nested models (a recall reply's hits) go to the document's components, where the
        # references point: a `$defs` inside a payload would not be found from the document root.
        payload = cls.model_json_schema(mode="serialization", ref_template="#/components/schemas/{model}")
        schemas.update(payload.pop("$defs", {}))
        messages[name] = {
            "name": name,
            "title": cls.__name__,
            "summary": (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else name,
            "contentType": "application/json",
            "headers": {"type": "object", "properties": {codec.H_TYPE: {"const": cls.type_tag()}}},
            "payload": payload,
        }
        address = f"{namespace}.{cls.SUBJECT}".replace("*", "{token}")
        channel = cls.SUBJECT.replace(".", "_").replace("*", "x")
        ref = {"$ref": f"#/components/messages/{name}"}
        channels[channel] = {"address": address, "messages": {name: ref}}
        operations[f"{channel}_{'send' if cls.SUBJECT in _WORLD_IN else 'receive'}"] = {
            "action": "send" if cls.SUBJECT in _WORLD_IN else "receive",
            "channel": {"$ref": f"#/channels/{channel}"},
        }
    return {
        "asyncapi": "3.0.0",
        "info": {"title": "brainbus", "version": "1",
                 "description": "Subjects and messages of a brainbus brain. Plain JSON works from any "
                                "client; see wire.md for headers and the binary vector encoding."},
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def write_schema(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for cls in registered():
        path = out / f"{cls.TYPE}.schema.json"
        path.write_bytes(orjson.dumps(cls.model_json_schema(mode="validation"), option=orjson.OPT_INDENT_2))
        written.append(path)
    api = out / "asyncapi.json"
    api.write_bytes(orjson.dumps(asyncapi(), option=orjson.OPT_INDENT_2))
    wire = out / "wire.md"
    wire.write_text("# brainbus wire format\n\n" + (codec.__doc__ or "").split("\n", 2)[2])
    return [*written, api, wire]
