"""Vision service: OCR on drawn images, image facts, refusal of broken uploads, Ollama and HF backends."""

from __future__ import annotations

import base64
import io
import os
import socket
import struct
import zlib

import pytest
from PIL import Image, ImageDraw, ImageFont
from ray import serve

from deployments.errors import ModelInputError
from deployments.vision import ImageDescriber, VisionOptions
from deployments.vision_image import decode_image
from tests.fake_ollama import FakeReply

Describer = ImageDescriber.func_or_class
BOLD_FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"
NAVY = (10, 20, 120)


def font(size: int) -> ImageFont.FreeTypeFont:
    if os.path.exists(BOLD_FONT):
        return ImageFont.truetype(BOLD_FONT, size)
    return ImageFont.load_default(size=size)


def encoded(picture: Image.Image, format: str = "PNG", **save_args) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format=format, **save_args)
    return buffer.getvalue()


def sign(lines: list[str], size: tuple[int, int] = (640, 200), ink=NAVY) -> Image.Image:
    picture = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(picture)
    for row, line in enumerate(lines):
        draw.text((40, 40 + row * 90), line, fill=ink, font=font(64), stroke_width=2, stroke_fill=ink)
    return picture


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width × height pixels: what a decompression bomb looks like up front."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def describer():
    return Describer()


async def test_ocr_reads_the_text_drawn_on_the_image(describer):
    analysis = await describer.analyse(encoded(sign(["HELLO WORLD"])))

    assert "hello world" in analysis.ocr_text.lower()
    assert analysis.description.startswith("A 640×200 PNG image, mostly white and dark blue.")
    assert "it contains the text: “hello world”." in analysis.description.lower()


async def test_ocr_keeps_rows_in_reading_order(describer):
    text = await describer.analyse(encoded(sign(["OPEN DAILY", "NINE TO FIVE"])))

    rows = text.ocr_text.lower().splitlines()
    assert rows == ["open daily", "nine to five"]


async def test_image_without_text_says_so(describer):
    picture = Image.new("RGB", (120, 80), (30, 80, 220))

    description = await describer.describe(encoded(picture))

    assert description == "A 120×80 PNG image, mostly blue. No text was found in it."


@pytest.mark.parametrize("format", ["JPEG", "PNG", "WEBP"])
async def test_image_facts_give_size_format_and_dominant_colours(describer, format):
    picture = Image.new("RGB", (300, 200), (210, 30, 30))
    ImageDraw.Draw(picture).rectangle((0, 0, 99, 199), fill=(40, 160, 40))

    analysis = await describer.analyse(encoded(picture, format))

    assert (analysis.width, analysis.height) == (300, 200)
    assert analysis.format == {"JPEG": "JPEG", "PNG": "PNG", "WEBP": "WebP"}[format]
    names = [colour.name for colour in analysis.dominant_colours]
    assert names == ["red", "green"]
    assert analysis.dominant_colours[0].share == pytest.approx(2 / 3, abs=0.03)
    assert analysis.dominant_colours[1].share == pytest.approx(1 / 3, abs=0.03)
    red = analysis.dominant_colours[0].hex
    assert abs(int(red[1:3], 16) - 210) < 12 and int(red[3:5], 16) < 50


async def test_animated_gif_is_read_from_its_first_frame(describer):
    frames = [sign(["FIRST"], (400, 160)), Image.new("RGB", (400, 160), "yellow")]
    data = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=200, loop=0)

    analysis = await describer.analyse(data)

    assert (analysis.format, analysis.frames) == ("GIF", 2)
    assert "first" in analysis.ocr_text.lower()
    assert "yellow" not in [colour.name for colour in analysis.dominant_colours]
    assert "Only the first of its 2 frames" in analysis.description


async def test_transparent_png_is_flattened_onto_white(describer):
    picture = Image.new("RGBA", (400, 160), (0, 0, 0, 0))
    ImageDraw.Draw(picture).text((30, 40), "GLASS", fill=(0, 0, 0, 255), font=font(64))

    analysis = await describer.analyse(encoded(picture))

    assert analysis.dominant_colours[0].name == "white"
    assert "glass" in analysis.ocr_text.lower()


def _truncated_png() -> bytes:
    data = encoded(sign(["CUT"]))
    return data[: len(data) // 2]


BROKEN = {
    "empty": (b"", "empty_image"),
    "random bytes": (os.urandom(4096), "not_an_image"),
    "text": (b"definitely not a picture", "not_an_image"),
    "truncated png": (_truncated_png(), "not_an_image"),
    "bmp (unsupported)": (encoded(Image.new("RGB", (10, 10)), "BMP"), "not_an_image"),
    "over 10 MiB": (b"\x89PNG\r\n\x1a\n" + bytes(10 * 2**20), "image_too_large"),
    "9000x9000 header": (png_header_only(9000, 9000), "image_too_large"),
    "100000x100000 header": (png_header_only(100_000, 100_000), "image_too_large"),
    "not bytes": ("aGVsbG8=", "not_an_image"),
}


@pytest.mark.parametrize("name", list(BROKEN))
async def test_broken_upload_is_refused_with_a_code(describer, name):
    data, code = BROKEN[name]

    with pytest.raises(ModelInputError) as refused:
        await describer.describe(data)

    assert refused.value.code == code
    assert refused.value.message


async def test_describer_keeps_serving_after_broken_uploads(describer):
    for data, _ in BROKEN.values():
        with pytest.raises(ModelInputError):
            await describer.analyse(data)

    analysis = await describer.analyse(encoded(sign(["SERVING AGAIN"])))

    assert "serving again" in analysis.ocr_text.lower()


def test_pixel_limit_is_an_option():
    data = encoded(Image.new("RGB", (200, 100), "white"))
    assert decode_image(data, max_bytes=2**20, max_pixels=20_000).width == 200

    with pytest.raises(ModelInputError) as refused:
        decode_image(data, max_bytes=2**20, max_pixels=19_999)

    assert refused.value.code == "image_too_large"
    assert "200×100" in refused.value.message


def test_options_reject_an_unknown_backend():
    with pytest.raises(ValueError):
        VisionOptions(backend="tesseract")


# --- Ollama ---------------------------------------------------------------------------------------


def ollama_describer(fake_ollama, model: str = "llava"):
    return Describer({"backend": "ollama", "host": fake_ollama.url, "model": model, "timeout_s": 10})


async def test_ollama_receives_image_and_prompt_and_its_reply_is_the_description(fake_ollama):
    fake_ollama.script(FakeReply(content="  A red sign that says HELLO.  "))
    data = encoded(sign(["HELLO"]), "JPEG")

    analysis = await ollama_describer(fake_ollama).analyse(data, prompt="What does the sign say?")

    assert analysis.description == "A red sign that says HELLO."
    assert analysis.ocr_text is None
    assert (analysis.width, analysis.format) == (640, "JPEG")
    request = fake_ollama.requests[0]
    assert request["model"] == "llava"
    assert request["stream"] is False
    [message] = request["messages"]
    assert message["role"] == "user"
    assert message["content"] == "What does the sign say?"
    assert base64.b64decode(message["images"][0]) == data


async def test_ollama_gets_a_default_prompt_and_webp_reencoded_as_png(fake_ollama):
    data = encoded(Image.new("RGB", (64, 48), "orange"), "WEBP")

    description = await ollama_describer(fake_ollama).describe(data, prompt="   ")

    assert description == "Hello from the fake Ollama."
    [message] = fake_ollama.requests[0]["messages"]
    assert "describe" in message["content"].lower()
    sent = Image.open(io.BytesIO(base64.b64decode(message["images"][0])))
    assert (sent.format, sent.size) == ("PNG", (64, 48))


async def test_unknown_ollama_model_is_unknown_model_and_the_service_keeps_working(fake_ollama):
    describer = ollama_describer(fake_ollama, model="no-such-vision-model")
    data = encoded(Image.new("RGB", (32, 32), "white"))

    with pytest.raises(ModelInputError) as refused:
        await describer.describe(data)

    assert refused.value.code == "unknown_model"
    assert "no-such-vision-model" in refused.value.message
    with pytest.raises(ModelInputError):
        await describer.describe(b"")
    fake_ollama.models.append("no-such-vision-model")
    assert await describer.describe(data) == "Hello from the fake Ollama."


async def test_ollama_not_running_is_a_connection_error_naming_the_host():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        host = f"http://127.0.0.1:{probe.getsockname()[1]}"
    describer = Describer({"backend": "ollama", "host": host, "timeout_s": 5})

    with pytest.raises(ConnectionError, match=host):
        await describer.describe(encoded(Image.new("RGB", (16, 16), "white")))


# --- transformers: a tiny random-weight LLaVA built here, loaded from disk like a real one ----------

TINY_VOCAB = ["cat", "<unk>", "<pad>", "<s>", "</s>", "<image>", "USER:", "ASSISTANT:", "what", "is", "this"]
CHAT_TEMPLATE = (
    "{% for message in messages %}USER: {% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image> {% else %}{{ part['text'] }}{% endif %}{% endfor %}{% endfor %}"
    "{% if add_generation_prompt %} ASSISTANT:{% endif %}"
)


def save_tiny_llava(folder) -> None:
    """Random tiny LLaVA whose LM head is zeroed, so greedy decoding always picks token 0, "cat"."""
    import inspect

    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    vocab = {word: index for index, word in enumerate(TINY_VOCAB)}
    word_level = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    word_level.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=word_level,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        additional_special_tokens=["<image>"],
        model_input_names=["input_ids", "attention_mask"],
    )
    image_processor = CLIPImageProcessor(size={"shortest_edge": 30}, crop_size={"height": 30, "width": 30})
    processor_args = {
        "patch_size": 15,
        "vision_feature_select_strategy": "default",
        "chat_template": CHAT_TEMPLATE,
    }
    if "num_additional_image_tokens" in inspect.signature(LlavaProcessor.__init__).parameters:
        processor_args["num_additional_image_tokens"] = 1  # the CLS position the "default" strategy drops
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, **processor_args)

    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=30,
            patch_size=15,
            projection_dim=16,
        ),
        text_config=LlamaConfig(
            vocab_size=len(vocab),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=128,
            pad_token_id=vocab["<pad>"],
            bos_token_id=vocab["<s>"],
            eos_token_id=vocab["</s>"],
        ),
        image_token_index=vocab["<image>"],
        image_seq_length=4,  # (30 / 15)² patches: the processor writes one <image> token per patch
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config)
    with torch.no_grad():
        model.get_output_embeddings().weight.zero_()
    model.generation_config.pad_token_id = vocab["<pad>"]
    model.generation_config.eos_token_id = vocab["</s>"]
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-llava")
    save_tiny_llava(folder)
    return folder


async def test_transformers_backend_loads_a_local_vlm_and_generates_only_new_tokens(tiny_llava):
    describer = Describer({"backend": "transformers", "model_path": str(tiny_llava), "max_new_tokens": 3})
    vision_tower = next(m for m in describer.backend.model.modules() if type(m).__name__ == "CLIPVisionModel")
    pixels_seen = []
    vision_tower.register_forward_hook(
        lambda module, args, kwargs, output: pixels_seen.append(kwargs or args), with_kwargs=True
    )

    analysis = await describer.analyse(encoded(sign(["HI"])), prompt="what is this")

    assert analysis.description == "cat cat cat"
    assert len(pixels_seen) == 1  # the image went through the vision tower once, at prefill
    assert analysis.ocr_text is None
    assert (analysis.width, analysis.height) == (640, 200)
    with pytest.raises(ModelInputError):
        await describer.describe(b"not an image")
    assert await describer.describe(encoded(Image.new("RGB", (50, 40), "black"))) == "cat cat cat"


def test_transformers_backend_refuses_a_folder_without_a_model(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        Describer({"backend": "transformers", "model_path": str(tmp_path)})


async def test_served_deployment_answers_through_a_handle_and_refusals_keep_their_code():
    handle = serve.run(ImageDescriber.bind(), name="vision-test", _local_testing_mode=True)

    description = await handle.describe.remote(encoded(sign(["HANDLE"])))
    with pytest.raises(ModelInputError) as refused:
        await handle.describe.remote(b"")

    assert "handle" in description.lower()
    assert refused.value.code == "empty_image"
