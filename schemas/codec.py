"""orjson on the wire: one codec for Faust topics and for the code that sends bytes itself."""

from __future__ import annotations

from typing import Any

import orjson
from faust.serializers import codecs
from pydantic import BaseModel

CODEC_NAME = "orjson"


def to_bytes(record: BaseModel) -> bytes:
    return orjson.dumps(record.model_dump(mode="json"))


class OrjsonCodec(codecs.Codec):
    def _dumps(self, obj: Any) -> bytes:
        if isinstance(obj, BaseModel):
            return to_bytes(obj)
        return orjson.dumps(obj)

    def _loads(self, s: bytes) -> Any:
        return orjson.loads(s)


codecs.register(CODEC_NAME, OrjsonCodec())
