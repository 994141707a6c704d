"""Ollama's everyday verbs against a running server, as a user runs them: `ps`, `stop`, `cp`,
`create` (flags and a Modelfile), `show`; a created model answers with its own defaults."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import ollama
import openai
import pytest
from server_process import ServerOutput, running_server

pytestmark = pytest.mark.e2e

BASE = "smollm2-135m"
HELLO = [{"role": "user", "content": "Say hello."}]
# A chat template of its own: ChatML with a long fixed preamble, so its prompts are longer.
TEMPLATE = (
    "{{ '<|im_start|>system\\nThis assistant answers in one short sentence, always, however "
    "the question is asked, and never uses lists, tables or code.<|im_end|>\\n' }}"
    "{% for message in messages %}<|im_start|>{{ message.role }}\n{{ message.content }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass
class Served:
    url: str  # the server's root, without /v1
    home: Path
    output: ServerOutput

    def llmedge(self, *args: str, url: bool = False) -> subprocess.CompletedProcess[str]:
        """`llmedge ARGS` as a subprocess; the client verbs find the server by LLMEDGE_HOST
        and LLMEDGE_PORT, or with `url`, by --url."""
        parts = urlsplit(self.url)
        env = {
            **os.environ,
            "LLMEDGE_HOME": str(self.home),
            "LLMEDGE_HOST": parts.hostname or "",
            "LLMEDGE_PORT": str(parts.port),
            "COLUMNS": "200",
        }
        extra = ["--url", self.url] if url else []
        command = [sys.executable, "-m", "llmedge.cli", *args, *extra]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("verbs")
    output = ServerOutput()
    with running_server(home, output=output) as url:
        yield Served(url.removesuffix("/v1"), home, output)


def test_ps_shows_the_loaded_model_and_stop_unloads_it(served: Served) -> None:
    shown = served.llmedge("ps")
    assert shown.returncode == 0, shown.stderr
    header, row = shown.stdout.splitlines()[:2]
    assert header.split() == ["NAME", "ID", "SIZE", "CONTEXT", "PARALLEL", "UNTIL"]
    assert row.split()[0] == f"{BASE}:q4_1" and "4096" in row and "idle left" in row
    assert served.llmedge("ps", url=True).stdout == shown.stdout

    stopped = served.llmedge("stop", BASE)
    assert stopped.returncode == 0 and f"unloaded {BASE}:q4_1" in stopped.stdout
    assert "no model is loaded" in served.llmedge("ps").stdout
    again = served.llmedge("stop", BASE)
    assert again.returncode == 1 and "was not loaded" in again.stdout

    nobody = served.llmedge("ps", "--url", "http://127.0.0.1:9")
    assert nobody.returncode == 1 and "no server answers at http://127.0.0.1:9" in nobody.stderr


def test_cp_makes_a_new_name_over_the_same_blob(served: Served) -> None:
    copied = served.llmedge("cp", BASE, "mine")
    assert copied.returncode == 0 and "copied smollm2-135m:q4_1 to mine:latest" in copied.stdout
    tags = {m["name"]: m["digest"] for m in httpx.get(f"{served.url}/api/tags").json()["models"]}
    assert tags["mine:latest"] == tags[f"{BASE}:q4_1"]
    assert served.llmedge("rm", "mine").returncode == 0


def test_a_created_model_answers_with_its_defaults(served: Served, tmp_path: Path) -> None:
    template = tmp_path / "template.jinja"
    template.write_text(TEMPLATE)
    made = served.llmedge(
        "create", "pirate", "--from", BASE, "--system", "You are a pirate. Talk like one.",
        "--param", "temperature=0.2", "--param", "num_predict=6", "--template", str(template),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "created pirate:latest from smollm2-135m:q4_1 (a system prompt" in made.stdout

    shown = served.llmedge("show", "pirate")
    assert "You are a pirate. Talk like one." in shown.stdout
    assert "num_predict=6, temperature=0.2" in shown.stdout
    api = httpx.post(f"{served.url}/api/show", json={"model": "pirate"}).json()
    assert api["system"] == "You are a pirate. Talk like one."
    assert api["parameters"] == "num_predict 6\ntemperature 0.2" and api["template"] == TEMPLATE
    assert 'SYSTEM """You are a pirate. Talk like one."""' in api["modelfile"]
    assert "FROM smollm2-135m:q4_1" in api["modelfile"]

    client = openai.OpenAI(base_url=f"{served.url}/v1", api_key="x", max_retries=0)
    answer = client.chat.completions.create(model="pirate", messages=HELLO)  # type: ignore[arg-type]
    line = served.output.wait_for("chat pirate:latest:")
    assert "temperature 0.2" in line and "max_tokens 6" in line
    assert "system 'You are a pirate. Talk like one.'" in line
    assert answer.usage is not None and answer.usage.completion_tokens <= 6
    base = client.chat.completions.create(model=BASE, messages=HELLO, max_tokens=2)  # type: ignore[arg-type]
    assert base.usage is not None and answer.usage.prompt_tokens > base.usage.prompt_tokens + 20

    client.chat.completions.create(
        model="pirate",
        messages=[{"role": "system", "content": "Be brief."}, *HELLO],  # type: ignore[list-item]
        temperature=0.9,
        max_tokens=2,
    )
    line = served.output.wait_for("temperature 0.9")  # what the request says wins
    assert "chat pirate:latest:" in line and "system 'Be brief.'" in line and "max_tokens 2" in line
    stopped = served.llmedge("stop", BASE)  # the model it was made from: one loaded model
    assert stopped.returncode == 0, stopped.stdout
    assert stopped.stdout.startswith(f"unloaded {BASE}:q4_1 (pirate:latest)")
    assert "no model is loaded" in served.llmedge("ps").stdout


def test_create_reads_a_modelfile_and_refuses_what_it_cannot_honour(
    served: Served, tmp_path: Path
) -> None:
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text(
        f"# a helper\nFROM {BASE}\nPARAMETER top_k 20\nPARAMETER stop <|im_end|>\n"
        'PARAMETER stop "END"\nSYSTEM """\nYou help.\nBriefly.\n"""\n'
    )
    made = served.llmedge("create", "helper:v1", "-f", str(modelfile))
    assert made.returncode == 0, made.stderr
    api = httpx.post(f"{served.url}/api/show", json={"model": "helper:v1"}).json()
    assert api["system"] == "You help.\nBriefly."
    assert api["parameters"] == 'stop "<|im_end|>"\nstop "END"\ntop_k 20'

    go = tmp_path / "go.tmpl"
    go.write_text("{{ .System }} {{ .Prompt }}")
    refused = served.llmedge("create", "bad", "--from", BASE, "--template", str(go))
    assert refused.returncode == 2 and "is a Go template (Ollama's)" in refused.stderr
    for args, complaint in (
        (["--param", "num_ctx=8192"], "set when the server starts"),
        (["--param", "mirostat=2"], "not one llmedge applies"),
        (["--param", "temperature=hot"], "must be a number"),
        (["--param", "temperature=9"], "between 0 and 2"),
    ):
        done = served.llmedge("create", "bad", "--from", BASE, *args)
        assert done.returncode == 2 and complaint in done.stderr, done.stderr
    modelfile.write_text(f"FROM {BASE}\nADAPTER ./lora.gguf\n")
    done = served.llmedge("create", "bad", "-f", str(modelfile))
    assert done.returncode == 2 and "line 2: ADAPTER is not supported" in done.stderr


def test_the_ollama_client_copies_creates_and_deletes(served: Served) -> None:
    client = ollama.Client(host=served.url)
    assert client.copy(BASE, "copied").status == "success"
    made = client.create(
        model="mario", from_=BASE, system="You are Mario.", parameters={"temperature": 0.1}
    )
    assert made.status == "success"
    shown = client.show("mario:latest")
    assert shown.parameters == "temperature 0.1" and "SYSTEM" in (shown.modelfile or "")
    names = {m.model for m in client.list().models}
    assert {"copied:latest", "mario:latest"} <= names
    answer = client.chat(model="mario:latest", messages=HELLO, options={"num_predict": 2})
    assert answer.done
    assert client.delete("copied").status == "success"
    assert "copied:latest" not in {m.model for m in client.list().models}
    with pytest.raises(ollama.ResponseError) as missing:
        client.delete("copied")
    assert missing.value.status_code == 404
    with pytest.raises(ollama.ResponseError, match="files: put the model in the store"):
        client.create(model="x", from_=BASE, files={"model.gguf": "sha256:" + "0" * 64})
    with pytest.raises(ollama.ResponseError, match="Go template"):
        client.create(model="x", from_=BASE, template="{{ .Prompt }}")
