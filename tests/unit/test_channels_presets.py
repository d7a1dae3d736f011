"""Channel presets as data: the packaged set, and a broken presets file stopping a stage at start."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from processors.channels.presets import PACKAGED, derivatives_for, load_presets
from processors.config import Settings


def test_the_packaged_presets_cover_every_channel_the_issue_names() -> None:
    presets = load_presets()
    shapes = {
        channel: [
            (p.spec.width, p.spec.height, p.spec.format, p.spec.fit) for p in presets.for_channel(channel)
        ]
        for channel in ("web", "social", "story", "email", "marketplace", "shopping")
    }
    assert shapes["social"] == [(1080, 1080, "JPEG", "cover")]  # square
    (story,) = shapes["story"]
    assert story[0] * 16 == story[1] * 9  # 9:16
    assert shapes["email"][0][:2] == (600, 600)
    assert shapes["marketplace"] == [(1000, 1000, "JPEG", "product")]
    assert {s[2] for s in shapes["web"]} == {"JPEG", "WEBP"}


def test_marketplace_presets_carry_their_rules_and_white_backgrounds() -> None:
    presets = load_presets()
    (main,) = presets.for_channel("marketplace")
    assert main.spec.background == "white"
    assert {(c.rule, str(c.parameter)) for c in main.checks} == {
        ("background_white", "{'margin_px': 24}"),
        ("min_product_fill", "0.85"),
        ("min_longest_side", "1000"),
    }
    (feed,) = presets.for_channel("shopping")
    assert [(c.rule, c.parameter) for c in feed.checks] == [("min_size", [500, 500])]
    assert all(not p.checks for p in presets.for_channel("web"))


def test_a_channel_without_a_preset_gets_the_default_set() -> None:
    assert derivatives_for("no-such-channel") == derivatives_for("default")


def test_settings_name_the_packaged_presets_by_default() -> None:
    assert Settings().channels.presets_file == ""
    assert load_presets(Settings().channels.presets_file) is load_presets(PACKAGED)


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "presets.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _minimal(**derivative: object) -> dict:
    base = {"name": "d", "size": [10, 10], "format": "PNG", "fit": "contain"}
    return {"channels": {"default": {"derivatives": [{**base, **derivative}]}}}


def test_a_custom_presets_file_is_used(tmp_path: Path) -> None:
    path = _write(tmp_path, _minimal(name="tiny", size=[64, 32]))
    (spec,) = derivatives_for("anything", path)
    assert (spec.name, spec.width, spec.height) == ("tiny", 64, 32)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_minimal(colour="red"), r"unknown field\(s\) \['colour'\]"),
        (_minimal(fit="stretch"), "fit must be one of"),
        (_minimal(format="GIF"), "format must be one of"),
        (_minimal(size=[0, 10]), "size must be positive"),
        (_minimal(name="a/b"), "plain file name"),
        (_minimal(rules=["nope"]), "unknown rule set 'nope'"),
        ({**_minimal(), "rule_sets": {"r": {"min_fill_typo": 0.8}}}, "unknown rule 'min_fill_typo'"),
        ({**_minimal(), "rule_sets": {"r": {"min_size": "big"}}}, "rule min_size: unusable parameter"),
        ({"channels": {"web": _minimal()["channels"]["default"]}}, "a 'default' channel is required"),
        (
            {
                "channels": {
                    "default": _minimal()["channels"]["default"],
                    "web": _minimal()["channels"]["default"],
                }
            },
            "derivative names must be unique",
        ),
    ],
)
def test_a_broken_presets_file_is_refused_naming_the_problem(
    tmp_path: Path, data: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        load_presets(_write(tmp_path, data))
