"""GGUF: header and metadata bounds (both byte orders) and chat-template injection."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from mlsec.model import Severity
from mlsec.scanners.model_gguf import template_risks
from tests.conftest import FIXTURES, at_least, rules_of, scan_bytes, scan_path

GGUF_DIR = FIXTURES / "formats" / "gguf"


def gstr(text: str | bytes, order: str = "<") -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack(order + "Q", len(raw)) + raw


def kv_str(key: str, value: str | bytes, order: str = "<") -> bytes:
    return gstr(key, order) + struct.pack(order + "I", 8) + gstr(value, order)


def kv_u32(key: str, value: int, order: str = "<") -> bytes:
    return gstr(key, order) + struct.pack(order + "II", 4, value)


def tensor_info(name: str, dims: list[int], ggml_type: int, offset: int, order: str = "<") -> bytes:
    return (gstr(name, order) + struct.pack(order + "I", len(dims)) + b"".join(struct.pack(order + "Q", d) for d in dims)
            + struct.pack(order + "IQ", ggml_type, offset))


def gguf(kvs: list[bytes], tensors: list[bytes] = (), data: bytes = b"", *, order: str = "<",  # type: ignore[assignment]
         version: int = 3, n_kv: int | None = None, n_tensors: int | None = None) -> bytes:
    """A GGUF file written from the spec: header, metadata, tensor infos, 32-byte aligned data."""
    body = (b"GGUF" + struct.pack(order + "IQQ", version, len(tensors) if n_tensors is None else n_tensors,
                                  len(kvs) if n_kv is None else n_kv) + b"".join(kvs) + b"".join(tensors))
    return body + b"\0" * (-len(body) % 32) + data


def template_file(template: str, order: str = "<") -> bytes:
    return gguf([kv_str("general.architecture", "llama", order), kv_str("tokenizer.chat_template", template, order)],
                order=order)


HOSTILE_TEMPLATES = {
    "llama-drama": "{{ self.__init__.__globals__.__builtins__.__import__('os').popen('id').read() }}",
    "cycler": "{% for m in messages %}{{ cycler.__init__.__globals__.os.popen('touch /tmp/pwn').read() }}{% endfor %}",
    "joiner": "{{ joiner.__init__.__globals__.os.system('id') }}",
    "namespace": "{% set x = namespace.__init__.__globals__ %}{{ x }}",
    "mro": "{{ ''.__class__.__mro__[1].__subclasses__()[40]('/etc/passwd').read() }}",
    "attr-filter-escaped": "{{ lipsum|attr('\\x5f\\x5fglobals\\x5f\\x5f') }}",
    "attr-concat": "{{ x|attr('__cla' ~ 'ss__') }}",
    "item-escaped": "{{ ()['\\x5f\\x5fclass\\x5f\\x5f'] }}",
    "unicode-escaped": "{{ ()['\\u005f\\u005fclass\\u005f\\u005f'] }}",
    "builtins-name": "{{ __builtins__ }}",
}


def test_benign_files_written_by_gguf_py_are_clean() -> None:
    for name in ("tiny_le.gguf", "tiny_be.gguf"):
        result = scan_path(GGUF_DIR / name)
        assert result.artifacts[0].format == "gguf"
        assert result.findings == () and not result.errors and not result.skipped, name


@pytest.mark.parametrize("payload", list(HOSTILE_TEMPLATES.values()), ids=list(HOSTILE_TEMPLATES))
@pytest.mark.parametrize("order", ["<", ">"], ids=["le", "be"])
def test_template_injection_is_critical(tmp_path: Path, payload: str, order: str) -> None:
    result = scan_bytes(tmp_path, "model.gguf", template_file(payload, order))
    found = [f for f in result.findings if f.rule_id == "MLSEC-GGUF-001"]
    assert found and max(f.severity for f in found) == Severity.CRITICAL, result.findings
    ev = dict(found[0].evidence)
    assert ev["template"] == "tokenizer.chat_template" and ev["snippet"]
    assert "MLSEC-GGUF-002" not in rules_of(result)


def test_named_templates_are_checked_too(tmp_path: Path) -> None:
    data = gguf([kv_str("tokenizer.chat_template", "{{ messages }}"),
                 kv_str("tokenizer.chat_template.tool_use", HOSTILE_TEMPLATES["cycler"])])
    found = [f for f in scan_bytes(tmp_path, "m.gguf", data).findings if f.rule_id == "MLSEC-GGUF-001"]
    assert found and {dict(f.evidence)["template"] for f in found} == {"tokenizer.chat_template.tool_use"}


def test_real_chat_templates_have_no_risks() -> None:
    from fixtures.make_format_fixtures import CHATML_TEMPLATE, LLAMA3_TEMPLATE, NAMESPACE_TEMPLATE

    zephyr = ("{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content']"
              " + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + "
              "eos_token }}\n{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n"
              "{% endif %}\n{% endfor %}")
    tools = ("{%- if tools %}{{- '<tools>' }}{%- for tool in tools %}{{- tool | tojson }}{%- endfor %}{%- endif %}"
             "{%- for message in messages %}{%- if message.role == 'system' and message.tool_calls is defined %}"
             "{{ message.content }}{%- endif %}{%- endfor %}{{ strftime_now('%d %b %Y') }}")
    for template in (LLAMA3_TEMPLATE, NAMESPACE_TEMPLATE, CHATML_TEMPLATE, zephyr, tools):
        assert template_risks(template) == [], template


def test_text_outside_tags_and_comments_is_not_code() -> None:
    assert template_risks("Never call __import__('os') yourself. {# __globals__ #}{{ messages[0]['content'] }}") == []


def test_loading_statements_and_underscore_building_blocks_are_high() -> None:
    risks = {r.what: r.severity for r in template_risks("{% include 'x.j2' %}{% set u = '_' %}{{ x[u ~ u] }}")}
    assert risks == {"statement include": Severity.HIGH, "literal underscores": Severity.HIGH}


def test_oversized_template_is_reported_and_its_start_still_checked(tmp_path: Path) -> None:
    big = HOSTILE_TEMPLATES["joiner"] + " " * (1 << 20)
    result = scan_bytes(tmp_path, "m.gguf", template_file(big))
    assert {"MLSEC-GGUF-001", "MLSEC-GGUF-002"} <= rules_of(result) and result.errors == ()


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (gguf([], version=0), "unknown GGUF version 0"),
        (gguf([], version=1), "version 1"),
        (gguf([], n_kv=1 << 63), "implausible counts"),
        (gguf([], n_tensors=1 << 40), "implausible counts"),
        (gguf([struct.pack("<Q", 1 << 63)]), "impossible"),
        (gguf([gstr("k") + struct.pack("<I", 8) + struct.pack("<Q", 1 << 63)]), "impossible"),
        (gguf([gstr("k") + struct.pack("<IIQ", 9, 4, 1 << 62)]), "impossible"),
        (gguf([gstr("k") + struct.pack("<IIQ", 9, 8, 1 << 40)]), "impossible"),
        (gguf([gstr("k") + struct.pack("<I", 77)]), "unknown value type 77"),
        (gguf([gstr("k") + struct.pack("<II", 9, 77) + struct.pack("<Q", 1)]), "unknown array element type"),
        (gguf([gstr("k") + struct.pack("<I", 9) + struct.pack("<IQ", 9, 1) * 5 + struct.pack("<IQ", 4, 0)]),
         "nested deeper"),
        (gguf([kv_u32("general.alignment", 48)]), "power of two"),
        (gguf([], [tensor_info("t", [1] * 9, 0, 0)]), "dimensions"),
        (gguf([], n_kv=3), "file ends"),
        (b"GGUF\x03\x00", "file ends"),
    ],
    ids=["version-0", "version-1", "kv-2^63", "tensors-2^40", "key-2^63", "string-2^63", "array-2^62", "strings-2^40",
         "value-type", "element-type", "nesting", "alignment", "dims", "missing-kv", "short"],
)
def test_malformed_headers_are_findings_not_allocations(tmp_path: Path, data: bytes, fragment: str) -> None:
    result = scan_bytes(tmp_path, "m.gguf", data)
    assert result.errors == ()
    msgs = [f.message for f in result.findings if f.rule_id == "MLSEC-GGUF-002"]
    assert any(fragment in m for m in msgs), msgs


@pytest.mark.parametrize("order", ["<", ">"], ids=["le", "be"])
def test_tensor_table_is_checked_against_the_file(tmp_path: Path, order: str) -> None:
    tensors = [tensor_info("a", [4], 0, 0, order), tensor_info("b", [4], 0, 8, order),   # overlaps a (16 bytes)
               tensor_info("c", [4], 0, 40, order),                                       # misaligned
               tensor_info("d", [1 << 20], 0, 64, order)]                                 # past the end
    data = gguf([kv_str("general.architecture", "llama", order)], tensors, bytes(64), order=order)
    msgs = " | ".join(f.message for f in scan_bytes(tmp_path, "m.gguf", data).findings)
    assert "overlap" in msgs and "not aligned" in msgs and "past the end of the file" in msgs


def test_unknown_tensor_type_is_low(tmp_path: Path) -> None:
    data = gguf([], [tensor_info("a", [4], 200, 0)], bytes(32))
    (f,) = scan_bytes(tmp_path, "m.gguf", data).findings
    assert f.rule_id == "MLSEC-GGUF-002" and f.severity == Severity.LOW


def test_a_valid_spec_written_file_is_clean(tmp_path: Path) -> None:
    tensors = [tensor_info("a", [4], 0, 0), tensor_info("q", [64], 2, 32)]   # F32 (16 bytes), Q4_0 (2 x 18 bytes)
    data = gguf([kv_str("tokenizer.chat_template", "{{ messages }}"), kv_u32("general.alignment", 32),
                 gstr("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 2) + gstr("a") + gstr("b")],
                tensors, bytes(32 + 36))
    assert scan_bytes(tmp_path, "m.gguf", data).findings == ()


def test_gguf_inside_a_tarball_is_checked(tmp_path: Path) -> None:
    import io
    import tarfile

    data = template_file(HOSTILE_TEMPLATES["mro"])
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("models/chat.gguf")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    result = scan_bytes(tmp_path, "models.tar.gz", buf.getvalue())
    (f,) = [f for f in result.findings if f.rule_id == "MLSEC-GGUF-001"][:1]
    assert f.location.member == "gzip!models/chat.gguf" and at_least(result, Severity.CRITICAL)
