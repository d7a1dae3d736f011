"""Prompt templates: loading, versions, strict rendering, limits and the sanity checker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from processors.intake import IntakePolicy
from processors.prompting import (
    CLIP_MAX_TOKENS,
    SCENES,
    TemplateError,
    TemplateStore,
    approx_token_count,
    check_store,
    check_template,
    clip_token_counter,
    parse_template,
    render,
    variables_for_job,
)

STORE = TemplateStore()

HEADER = """---
id: {id}
version: {version}
scene: studio
lighting: soft light
brand_constraints: [keep the logo]
negative_prompt: blurry
variables:
  - {{name: product_title, required: true, description: The title., example: Kettle}}
  - {{name: attributes_text, required: false, description: Attributes., example: "red"}}
---
"""


def write(root: Path, template_id: str, version: str, body: str, header: str = HEADER) -> Path:
    file = root / template_id / f"{version}.j2"
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(header.format(id=template_id, version=version) + body)
    return file


def make_job(**spec: Any) -> dict[str, Any]:
    return {
        "job_id": "job-1",
        "product": {
            "sku": "SKU-1",
            "title": "Stainless steel electric kettle",
            "brand": "Acme",
            "category": "kitchen appliances",
            "attributes": {
                "colour": "brushed steel",
                "material": "stainless steel",
                "description": "A long marketing paragraph " * 5,
            },
        },
        "spec": {
            "asset_type": "hero",
            "channel": "web",
            "locale": "en-US",
            "template_id": "studio-hero",
            "width": 1024,
            "height": 768,
            "text_overlay": None,
            **spec,
        },
    }


def test_store_loads_every_shipped_template() -> None:
    assert STORE.ids() == ["lifestyle-kitchen", "studio-hero", "typography-banner"]
    assert STORE.versions("studio-hero") == ["1.0.0", "1.1.0"]
    assert STORE.latest("studio-hero") == "1.1.0"
    assert STORE.get("studio-hero").version == "1.1.0"
    assert STORE.get("studio-hero", "1.0.0").version == "1.0.0"
    assert STORE.has("studio-hero") and not STORE.has("nope")
    assert STORE.has_version("studio-hero", "1.0.0") and not STORE.has_version("studio-hero", "2")
    assert STORE.resolve_version("studio-hero", None) == "1.1.0"
    assert STORE.resolve_version("studio-hero", "1.0.0") == "1.0.0"


def test_front_matter_is_parsed() -> None:
    template = STORE.get("typography-banner")
    assert template.scene in SCENES and template.scene == "holiday"
    assert template.lighting and template.brand_constraints and template.negative_prompt
    assert template.required_variables == ["product_title", "text_overlay"]
    assert {t.scene for i in STORE.ids() for t in [STORE.get(i)]} <= set(SCENES)


def test_unknown_template_or_version() -> None:
    with pytest.raises(TemplateError) as err:
        STORE.get("no-such-template")
    assert err.value.reason == "unknown_template"
    with pytest.raises(TemplateError) as err:
        STORE.get("studio-hero", "9.0.0")
    assert err.value.reason == "unknown_version" and "1.1.0" in err.value.detail


def test_render_a_job() -> None:
    variables = variables_for_job(make_job())
    rendered = STORE.render("studio-hero", variables)
    assert rendered.template_id == "studio-hero" and rendered.template_version == "1.1.0"
    assert rendered.scene == "studio"
    assert rendered.positive.startswith("Stainless steel electric kettle by Acme, ")
    assert "colour: brushed steel" in rendered.positive and "landscape framing" in rendered.positive
    assert "marketing paragraph" not in rendered.positive  # prose-length attributes stay out
    assert "\n" not in rendered.positive and "  " not in rendered.positive
    assert "blurry" in rendered.negative
    assert rendered.variables["product_title"] == "Stainless steel electric kettle"
    record = rendered.to_record()
    assert record["variables"]["scene"] == "studio"
    assert all(isinstance(v, str) for v in record["variables"].values())
    assert set(record) == {"template_id", "template_version", "positive", "negative", "variables"}


def test_render_is_deterministic() -> None:
    job = make_job()
    assert STORE.render("studio-hero", variables_for_job(job)) == STORE.render(
        "studio-hero", variables_for_job(job)
    )


def test_optional_variables_may_be_absent() -> None:
    rendered = render(STORE.get("studio-hero", "1.0.0"), {"product_title": "Kettle"})
    assert rendered.positive.startswith("Kettle, professional studio product photograph")
    assert " by " not in rendered.positive and ",," not in rendered.positive


def test_missing_required_variable_names_it() -> None:
    variables = variables_for_job(make_job())  # no text overlay
    with pytest.raises(TemplateError) as err:
        STORE.render("typography-banner", variables)
    assert err.value.reason == "missing_variable"
    assert "'text_overlay'" in err.value.detail and "typography-banner@1.0.0" in err.value.detail


def test_blank_required_variable_is_missing() -> None:
    with pytest.raises(TemplateError, match="product_title") as err:
        STORE.render("studio-hero", {"product_title": "   "})
    assert err.value.reason == "missing_variable"


def test_undeclared_variable_in_body_is_named(tmp_path: Path) -> None:
    write(tmp_path, "t", "1.0.0", "{{ product_title }} in {{ room }}")
    store = TemplateStore(tmp_path)
    with pytest.raises(TemplateError) as err:
        store.render("t", {"product_title": "Kettle", "room": "ignored: not declared"})
    assert err.value.reason == "missing_variable" and "'room'" in err.value.detail
    problems = check_template(store.get("t"))
    assert "body uses undeclared variable 'room'" in problems
    assert "variable 'attributes_text' is declared but never used" in problems


def test_typography_renders_the_overlay_verbatim() -> None:
    rendered = STORE.render(
        "typography-banner", variables_for_job(make_job(text_overlay="Winter sale 20% off"))
    )
    assert '"Winter sale 20% off"' in rendered.positive
    assert rendered.scene == "holiday"


def test_restricted_term_in_prompt() -> None:
    terms = IntakePolicy.load().restricted
    job = make_job()
    job["product"]["title"] = "Kettle, clinically proven to boil"
    with pytest.raises(TemplateError) as err:
        STORE.render("studio-hero", variables_for_job(job), restricted_terms=terms)
    assert err.value.reason == "restricted_term" and "clinically proven" in err.value.detail
    with pytest.raises(TemplateError, match="restricted_term"):
        STORE.render("studio-hero", variables_for_job(job), restricted_terms=["Clinically Proven"])


def test_prompt_too_long() -> None:
    with pytest.raises(TemplateError) as err:
        STORE.render("studio-hero", variables_for_job(make_job()), max_chars=50)
    assert err.value.reason == "prompt_too_long"


def test_token_limit_with_a_real_tokenizer_hook() -> None:
    calls: list[str] = []

    def counter(text: str) -> int:
        calls.append(text)
        return 500

    with pytest.raises(TemplateError) as err:
        STORE.render("studio-hero", {"product_title": "Kettle"}, token_counter=counter)
    assert err.value.reason == "token_limit" and "500" in err.value.detail
    assert calls


def test_over_the_token_limit_optional_variables_are_dropped_first(tmp_path: Path) -> None:
    write(tmp_path, "t", "1.0.0", "{{ product_title }}, {{ attributes_text }}")
    template = TemplateStore(tmp_path).get("t")
    long_attrs = " ".join(["colour"] * 60)
    rendered = template.render({"product_title": "Kettle", "attributes_text": long_attrs})
    assert rendered.positive == "Kettle" and rendered.dropped == ("attributes_text",)
    assert rendered.to_record()["variables"]["dropped_variables"] == "attributes_text"
    with pytest.raises(TemplateError) as err:
        template.render({"product_title": long_attrs})
    assert err.value.reason == "token_limit"


def test_long_titles_are_cut_to_fit() -> None:
    job = make_job()
    job["product"]["title"] = " ".join(["word"] * 60)
    rendered = STORE.render("studio-hero", variables_for_job(job))
    assert approx_token_count(rendered.positive) <= CLIP_MAX_TOKENS


def test_approximate_token_count() -> None:
    assert approx_token_count("") == 2  # start and end tokens
    assert approx_token_count("red kettle") == 5  # a six-letter word counts two
    assert approx_token_count("red pot") == 4
    assert approx_token_count("a, b") == 5
    assert approx_token_count("1.7") == 5
    assert approx_token_count("北京") == 2 + 6  # three UTF-8 bytes a character


@pytest.mark.ml  # open_clip imports torch: seconds, not milliseconds
def test_approximation_counts_more_than_clip_on_shipped_prompts() -> None:
    exact = clip_token_counter()
    # The ml extra (installed by scripts/bootstrap.sh) brings open_clip: missing is a failure.
    assert exact is not None, "open_clip is not installed: run scripts/bootstrap.sh"
    assert check_store(STORE, token_counter=exact) == {}
    for template_id in STORE.ids():
        for version in STORE.versions(template_id):
            template = STORE.get(template_id, version)
            sample = {v.name: v.example for v in template.variables if v.example}
            rendered = template.render(sample)
            for text in (rendered.positive, rendered.negative):
                assert approx_token_count(text) >= exact(text), text


def test_shipped_templates_pass_the_sanity_checker() -> None:
    terms = IntakePolicy.load().restricted
    assert check_store(STORE, restricted_terms=terms) == {}


@pytest.mark.parametrize(
    ("header_change", "message"),
    [
        (("scene: studio", "scene: moon"), "scene 'moon'"),
        (("scene: studio\n", ""), "'scene'"),
        (("lighting: soft light\n", ""), "'lighting'"),
        (("version: {version}", "version: latest"), "version"),
        (("{{name: product_title,", "{{name: scene,"), "reserved"),
        (("required: true", "required: yes-please"), "required"),
    ],
)
def test_invalid_front_matter(tmp_path: Path, header_change: tuple[str, str], message: str) -> None:
    header = HEADER.replace(*header_change)
    write(tmp_path, "t", "1.0.0", "{{ product_title }}", header=header)
    with pytest.raises(TemplateError, match=message) as err:
        TemplateStore(tmp_path)
    assert err.value.reason == "invalid_template"


def test_no_front_matter_or_bad_jinja(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="front-matter"):
        parse_template("{{ product_title }}")
    write(tmp_path, "t", "1.0.0", "{{ product_title ")
    with pytest.raises(TemplateError) as err:
        TemplateStore(tmp_path)
    assert err.value.reason == "invalid_template"


def test_path_must_agree_with_front_matter(tmp_path: Path) -> None:
    file = write(tmp_path, "t", "1.0.0", "{{ product_title }}")
    file.rename(file.with_name("1.0.1.j2"))
    with pytest.raises(TemplateError, match=r"the path says t@1\.0\.1"):
        TemplateStore(tmp_path)


def test_versions_sort_semantically(tmp_path: Path) -> None:
    for version in ("1.9.0", "1.10.0", "1.2.0"):
        write(tmp_path, "t", version, "{{ product_title }}, {{ attributes_text }}")
    store = TemplateStore(tmp_path)
    assert store.versions("t") == ["1.2.0", "1.9.0", "1.10.0"]
    assert store.latest("t") == "1.10.0"


def test_templates_are_sandboxed(tmp_path: Path) -> None:
    write(
        tmp_path,
        "t",
        "1.0.0",
        "{{ product_title.__class__.__mro__[1].__subclasses__() }} {{ attributes_text }}",
    )
    with pytest.raises(TemplateError) as err:
        TemplateStore(tmp_path).render("t", {"product_title": "x"})
    assert err.value.reason == "render_failed"


def test_variables_for_job() -> None:
    variables = variables_for_job(make_job(text_overlay="  ", width=512, height=1024))
    assert variables["text_overlay"] is None
    assert variables["aspect"] == "portrait"
    assert variables["product_title"] == "Stainless steel electric kettle"
    assert variables["attributes_text"] == "colour: brushed steel, material: stainless steel"
    assert variables["asset_type"] == "hero" and variables["locale"] == "en-US"
