"""A one-route Serve app (WebSocket echo), small enough to start in seconds, for the data-plane tests."""

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from ray import serve

api = FastAPI()


@serve.deployment(name="Echo", max_ongoing_requests=100, graceful_shutdown_timeout_s=5,
                  ray_actor_options={"num_cpus": 0.1})
@serve.ingress(api)
class Echo:
    def __init__(self, label: str = "echo") -> None:
        self.label = label

    @api.get("/")
    async def hello(self) -> str:
        return self.label

    @api.websocket("/ws")
    async def echo(self, websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                await websocket.send_text(f"{self.label}:{await websocket.receive_text()}")
        except WebSocketDisconnect:
            pass
