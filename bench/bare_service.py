"""The bare ceiling for `bench_service.py`: the same model.onnx behind FastAPI and onnxruntime, and nothing else
(no request model, no token, no prediction log). `uvicorn bare_service:app --factory`, model in $BARE_MODEL."""

import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, Request


def app() -> FastAPI:
    model = Path(os.environ["BARE_MODEL"])
    features = [c["name"] for c in json.loads((model.parent / "signature.json").read_text())["input"]["columns"]]
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1  # as the service's session
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    bare = FastAPI()

    @bare.post("/predict")
    async def predict(request: Request) -> dict:
        records = (await request.json())["records"]
        x = np.array([[r[n] for n in features] for r in records], dtype=np.float32)
        return {"predictions": session.run(None, {"features": x})[0].tolist()}

    return bare
