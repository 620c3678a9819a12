"""One conversation through Pipecat's OpenAIRealtimeLLMService, run in .venv-pipecat
(scripts/pipecat_env.sh) by tests/test_pipecat_realtime.py.

    .venv-pipecat/bin/python tests/pipecat_client.py '{"url": "ws://HOST:PORT/v1/realtime",
                                                       "speech": "q.pcm", "barge_in": "b.pcm"}'

A Pipecat pipeline as its examples build one (context aggregators around the service), with
frames queued where a transport's input would push them: the bot's greeting (LLMRunFrame), a
spoken question (PCM16 24 kHz, the service's defaults: server VAD), a typed message, an
interruption (InterruptionFrame, what Pipecat's own turn handling sends), a spoken barge-in and
a registered function. An observer records the service's frames; the report (last stdout line,
JSON) holds each step's frames and the LLMContext's messages. Pipecat treats every `error` event
as fatal (an ErrorFrame): any ErrorFrame is reported.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from pipecat.adapters.schemas.function_schema import FunctionSchema
from pipecat.adapters.schemas.tools_schema import ToolsSchema
from pipecat.frames.frames import (
    EndFrame,
    ErrorFrame,
    FunctionCallResultFrame,
    InputAudioRawFrame,
    InterimTranscriptionFrame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMMessagesAppendFrame,
    LLMRunFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSTextFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.runner import PipelineRunner
from pipecat.pipeline.task import PipelineParams, PipelineTask
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
from pipecat.services.llm_service import FunctionCallParams
from pipecat.services.openai.realtime.llm import OpenAIRealtimeLLMService

STEP_TIMEOUT_S = 60
CHUNK = 24000 * 2 // 50  # 20 ms of 24 kHz PCM16


class Recorder(BaseObserver):
    """The frames the realtime service pushes (first push only), and a wake-up for each."""

    def __init__(self, service: OpenAIRealtimeLLMService) -> None:
        super().__init__()
        self.service, self.frames, self.changed = service, [], asyncio.Event()

    async def on_push_frame(self, data: FramePushed) -> None:
        mine = data.source is self.service or isinstance(data.frame, ErrorFrame)
        if mine and not any(f is data.frame for f in self.frames[-50:]):
            self.frames.append(data.frame)
            self.changed.set()

    async def until(self, predicate, what: str) -> Any:
        async def wait() -> Any:
            while True:
                self.changed.clear()
                if found := predicate():
                    return found
                await self.changed.wait()

        try:
            return await asyncio.wait_for(wait(), STEP_TIMEOUT_S)
        except TimeoutError:
            kinds = [type(f).__name__ for f in self.frames[-15:]]
            raise AssertionError(f"timed out waiting for {what}; last frames {kinds}") from None

    def of(self, kind: type, since: int = 0) -> list[Any]:
        return [f for f in self.frames[since:] if isinstance(f, kind)]

    def index(self, frame: Any) -> int:
        return next(n for n, f in enumerate(self.frames) if f is frame)

    def spoken(self, since: int) -> str:
        return "".join(f.text for f in self.of(TTSTextFrame, since))

    def audio_bytes(self, since: int) -> int:
        return sum(len(f.audio) for f in self.of(TTSAudioRawFrame, since))


async def converse(options: dict[str, Any]) -> dict[str, Any]:
    calls: list[dict] = []

    async def get_weather(params: FunctionCallParams) -> None:
        calls.append(dict(params.arguments))
        await params.result_callback({"city": params.arguments["city"], "temp_c": 21})

    weather = FunctionSchema(name="get_weather", description="Get the current weather for a city.",
                             properties={"city": {"type": "string"}}, required=["city"])
    llm = OpenAIRealtimeLLMService(api_key=options.get("api_key", "sk-local"), base_url=options["url"])
    sent: list[str] = []
    send_client_event = llm.send_client_event

    async def recorded(event: Any) -> None:  # what Pipecat sends, for a failing run's reader
        if event.type != "input_audio_buffer.append":
            sent.append(f"{event.type} {getattr(event, 'item_id', '') or ''} {getattr(event, 'audio_end_ms', '')}")
        await send_client_event(event)

    llm.send_client_event = recorded
    llm.register_function("get_weather", get_weather)
    context = LLMContext([{"role": "system", "content": "You are a helpful voice assistant."}],
                         tools=ToolsSchema(standard_tools=[weather]))
    aggregators = LLMContextAggregatorPair(context)
    pipeline = Pipeline([aggregators.user(), llm, aggregators.assistant()])
    recorder = Recorder(llm)
    task = PipelineTask(pipeline, params=PipelineParams(audio_in_sample_rate=24000, audio_out_sample_rate=24000),
                        observers=[recorder], idle_timeout_secs=None)
    runner = asyncio.create_task(PipelineRunner(handle_sigint=False).run(task))
    report: dict[str, Any] = {"steps": {}, "calls": calls, "sent": sent}

    async def reply_done(since: int, what: str) -> None:
        await recorder.until(lambda: recorder.of(LLMFullResponseEndFrame, since), what)

    async def speak(name: str) -> None:
        """At the pace a transport delivers a microphone: Pipecat's interruption drops the frames still
        queued in its processors, so audio queued all at once would lose the rest of a barge-in."""
        audio = Path(options[name]).read_bytes() + bytes(24000 * 2 * 2)  # then 2 s of room silence
        loop = asyncio.get_running_loop()
        started = loop.time()
        for n, start in enumerate(range(0, len(audio), CHUNK)):
            await task.queue_frame(InputAudioRawFrame(audio[start:start + CHUNK], 24000, 1))
            await asyncio.sleep(max(0.0, started + (n + 1) * 0.02 - loop.time()))  # a 20 ms clock, not a wait

    async def say(text: str) -> None:
        # Into the service itself: the user aggregator would keep an append for the context and
        # push a context frame downstream, which a realtime service does not answer; from the
        # service the append travels on to the assistant aggregator, which asks it to run.
        await llm.queue_frame(LLMMessagesAppendFrame([{"role": "user", "content": text}], run_llm=True))

    try:
        # 0. the bot speaks first, as Pipecat's examples start
        mark = len(recorder.frames)
        await task.queue_frame(LLMRunFrame())
        await reply_done(mark, "the greeting")
        report["steps"]["greeting"] = {"spoken": recorder.spoken(mark), "audio_bytes": recorder.audio_bytes(mark)}

        # 1. a spoken question (server VAD, the service's default)
        mark = len(recorder.frames)
        await speak("speech")
        await recorder.until(lambda: recorder.of(TranscriptionFrame, mark), "the transcript")
        await reply_done(mark, "the spoken turn's reply")
        report["steps"]["voice"] = {
            "transcripts": [f.text for f in recorder.of(TranscriptionFrame, mark)],
            "interim": [f.text for f in recorder.of(InterimTranscriptionFrame, mark)],
            "spoken": recorder.spoken(mark), "audio_bytes": recorder.audio_bytes(mark)}

        # 2. a typed message
        mark = len(recorder.frames)
        await say("What is the capital of France?")
        await reply_done(mark, "the typed turn's reply")
        report["steps"]["text"] = {"spoken": recorder.spoken(mark)}

        # 3. an interruption mid-reply (what Pipecat's turn handling pushes when the user talks)
        mark = len(recorder.frames)
        await say("Tell me a long story about the sea.")
        await recorder.until(lambda: recorder.audio_bytes(mark) >= 24000 * 2, "a second of the story")
        await task.queue_frame(InterruptionFrame())
        await reply_done(mark, "the interrupted story's end")
        report["steps"]["interrupt"] = {"audio_bytes": recorder.audio_bytes(mark)}

        # 4. a spoken barge-in over a reply: the server's VAD stops it
        mark = len(recorder.frames)
        await say("Tell me another long story about a ship.")
        await recorder.until(lambda: recorder.audio_bytes(mark) >= 24000 * 2, "a second of the second story")
        await speak("barge_in")
        await recorder.until(lambda: recorder.of(TranscriptionFrame, mark), "the barge-in's transcript")
        heard = recorder.index(recorder.of(TranscriptionFrame, mark)[0])
        await reply_done(heard, "the barge-in's answer")
        report["steps"]["barge_in"] = {"transcripts": [f.text for f in recorder.of(TranscriptionFrame, mark)],
                                       "answer": recorder.spoken(heard)}

        # 5. the registered function: Pipecat runs it and sends the output, then the model answers
        mark = len(recorder.frames)
        await say("What is the weather in Paris?")
        await recorder.until(lambda: recorder.of(FunctionCallResultFrame, mark), "the function's result")
        answered = recorder.index(recorder.of(FunctionCallResultFrame, mark)[0])
        await recorder.until(lambda: recorder.of(TTSTextFrame, answered), "the answer after the function")
        speaking = recorder.index(recorder.of(TTSTextFrame, answered)[0])
        await reply_done(speaking, "the end of that answer")
        report["steps"]["tool"] = {"spoken": recorder.spoken(answered)}
    except AssertionError as error:
        report["failure"] = str(error)
    finally:
        report["errors"] = [str(f.error) for f in recorder.of(ErrorFrame)]
        report["context"] = [_plain(m) for m in context.get_messages()]
        await task.queue_frame(EndFrame())
        try:
            await asyncio.wait_for(runner, 15)
        except TimeoutError:
            await task.cancel()
    return report


def _plain(message: Any) -> Any:
    try:
        return json.loads(json.dumps(message, default=str))
    except TypeError:
        return str(message)


if __name__ == "__main__":
    print(json.dumps(asyncio.run(converse(json.loads(sys.argv[1])))))
