"""The A1111 prompt language: attention weights, prompt editing/alternation, AND, extra networks.

``data/a1111_prompt_cases.json`` holds A1111's outputs: its doctests plus ~200 more prompts
(unbalanced brackets, escapes, odd numbers, unicode, nesting, hires and old timelines) run through
A1111's own algorithm and lark grammar (lark 1.1.5), keeping only prompts whose result is the same
under every PYTHONHASHSEED (lark's Earley parser resolves a few ambiguous prompts differently from
run to run; those are pinned below to our deterministic reading). Weights compare exactly (==).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from huihua.errors import PromptError
from huihua.prompts import (
    ExtraNetworkCall,
    get_learned_conditioning_prompt_schedules,
    get_multicond_prompt_list,
    lora_weights,
    parse_extra_networks,
    parse_prompt_attention,
    split_and,
)

CASES = json.loads((Path(__file__).parent / "data" / "a1111_prompt_cases.json").read_text(encoding="utf-8"))
ATTENTION = CASES["attention"]
SCHEDULES = CASES["schedules"]


def test_the_table_is_large_enough() -> None:
    assert len(ATTENTION) >= 100 and len(SCHEDULES) >= 90


@pytest.mark.parametrize("case", ATTENTION, ids=[f"attn{i}" for i in range(len(ATTENTION))])
def test_parse_prompt_attention_matches_a1111(case: dict) -> None:
    if case["expected"] == "error":  # A1111 raises ValueError on e.g. "(a:1.2.3)"
        with pytest.raises(PromptError):
            parse_prompt_attention(case["prompt"])
        return
    got = parse_prompt_attention(case["prompt"])
    assert all(isinstance(piece, tuple) for piece in got)
    assert [list(piece) for piece in got] == case["expected"]


@pytest.mark.parametrize("case", SCHEDULES, ids=[f"sched{i}" for i in range(len(SCHEDULES))])
def test_prompt_schedules_match_a1111(case: dict) -> None:
    got = get_learned_conditioning_prompt_schedules([case["prompt"]], case["steps"], case["hires_steps"], case["old"])
    assert [list(entry) for entry in got[0]] == case["expected"]


def test_a1111_doctest_examples_inline() -> None:
    assert parse_prompt_attention("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).") == [
        ("a ", 1.0), ("house", 1.5730000000000004), (" ", 1.1), ("on", 1.0), (" a ", 1.1),
        ("hill", 0.55), (", sun, ", 1.1), ("sky", 1.4641000000000006), (".", 1.1),
    ]
    g = lambda p, *a: get_learned_conditioning_prompt_schedules([p], 10, *a)[0]  # noqa: E731
    assert g("a[b:[c:d:2]:1]e") == [(1, "abe"), (2, "ace"), (10, "ade")]
    assert g("[fe|||]male")[:4] == [(1, "female"), (2, "male"), (3, "male"), (4, "male")]
    assert g("a [b:.5] c", 10) == [(10, "a b c")]  # hires: fractions address the hires pass
    assert g("a [b:1.5] c", 10) == [(5, "a  c"), (10, "a b c")]
    # A1111's docstring claims "a [{b|d{:.5] c" is edited; its grammar actually rejects the "|".
    assert g("a [{b|d{:.5] c") == [(10, "a [{b|d{:.5] c")]


def test_ambiguous_prompts_read_the_group_first() -> None:
    # lark gives these different results depending on PYTHONHASHSEED; we always take the group.
    g = lambda p: get_learned_conditioning_prompt_schedules([p], 10)[0]  # noqa: E731
    assert g("[a:b:2]]") == [(2, "a]"), (10, "b]")]
    assert g("[a:b:2]:") == [(2, "a:"), (10, "b:")]
    assert g("[a:b:3](") == [(3, "a("), (10, "b(")]


def test_schedules_never_crash_on_extreme_input() -> None:
    g = lambda p: get_learned_conditioning_prompt_schedules([p], 10)[0]  # noqa: E731
    assert g("[a:b:1e400]") == [(10, "a")]  # A1111 raises OverflowError here
    deep = "[" * 500 + "a"
    assert g(deep) == [(10, deep)]
    nested = "[" * 300 + "a:b:3" + "]" * 300  # deeper than the nesting limit: used verbatim
    assert g(nested) == [(10, nested)]
    assert parse_prompt_attention("(" * 2000 + "a")[0][0] == "a"


def test_schedules_keep_input_order_and_share_duplicates() -> None:
    got = get_learned_conditioning_prompt_schedules(["x [a:b:5]", "y", "x [a:b:5]"], 10)
    assert got == [[(5, "x a"), (10, "x b")], [(10, "y")], [(5, "x a"), (10, "x b")]]
    got[0].append((99, "mutated"))
    assert got[2] == [(5, "x a"), (10, "x b")]  # each row is its own list


@pytest.mark.parametrize("prompts, indexes, flat", [
    (["a AND b:0.5"], [[(0, 1.0), (1, 0.5)]], ["a", " b"]),
    (["a:2"], [[(0, 2.0)]], ["a"]),
    (["a AND a"], [[(0, 1.0), (1, 1.0)]], ["a", " a"]),
    (["cat AND dog : 1.5 "], [[(0, 1.0), (1, 1.5)]], ["cat", " dog"]),
    (["ANDROID AND x"], [[(0, 1.0), (1, 1.0)]], ["ANDROID", " x"]),
    (["a AND\nb:3\n"], [[(0, 1.0), (1, 3.0)]], ["a", "\nb"]),
    (["x:1.5e2"], [[(0, 1.0)]], ["x:1.5e2"]),
    (["a:-.5 AND b:+2."], [[(0, -0.5), (1, 2.0)]], ["a", " b"]),
    (["a AND b", "b AND c:0.3"], [[(0, 1.0), (1, 1.0)], [(2, 1.0), (3, 0.3)]], ["a", " b", "b", " c"]),
    (["[a:b:3] AND c"], [[(0, 1.0), (1, 1.0)]], ["[a:b:3]", " c"]),
    (["a ANDb"], [[(0, 1.0)]], ["a ANDb"]),
    ([""], [[(0, 1.0)]], [""]),
    (["a AND b", "a AND b"], [[(0, 1.0), (1, 1.0)], [(0, 1.0), (1, 1.0)]], ["a", " b"]),
])
def test_multicond_prompt_list_matches_a1111(prompts: list[str], indexes: list, flat: list[str]) -> None:
    assert get_multicond_prompt_list(prompts) == (indexes, flat)


def test_split_and() -> None:
    expected = [("landscape", 1.0), (" castle", 1.2), (" dragon", 0.5)]
    assert split_and("landscape AND castle:1.2 AND dragon:0.5") == expected


def test_extra_networks_are_extracted_in_order() -> None:
    prompt = "<lora:add_detail:0.5> portrait, <lora:epi:1.0:0.5>, <hypernet:anime:0.7> <lyco:x:te=0.2:unet=0.8:dyn=8>"
    cleaned, calls = parse_extra_networks(prompt)
    assert cleaned == " portrait, ,  "
    assert calls == [
        ExtraNetworkCall("lora", "add_detail", ("0.5",)),
        ExtraNetworkCall("lora", "epi", ("1.0", "0.5")),
        ExtraNetworkCall("hypernet", "anime", ("0.7",)),
        ExtraNetworkCall("lyco", "x", ("te=0.2", "unet=0.8", "dyn=8")),
    ]
    assert calls[3].named == {"te": "0.2", "unet": "0.8", "dyn": "8"} and calls[3].positional == ()


def test_extra_network_rule_edges() -> None:
    # <(\w+):([^>]+)>: a kind needs word characters and at least one argument character.
    assert parse_extra_networks("<lora:>") == ("<lora:>", [])
    assert parse_extra_networks("<my-lora:x>") == ("<my-lora:x>", [])
    assert parse_extra_networks("<lora:a b:1>x") == ("x", [ExtraNetworkCall("lora", "a b", ("1",))])
    assert parse_extra_networks("a <lora:n> b") == ("a  b", [ExtraNetworkCall("lora", "n", ())])
    assert parse_extra_networks("<lora:x:1<lora:y:2>") == ("", [ExtraNetworkCall("lora", "x", ("1<lora", "y", "2"))])


def test_lora_weights_follow_a1111() -> None:
    w = lambda text: lora_weights(parse_extra_networks(text)[1][0])  # noqa: E731
    assert (w("<lora:n>").te, w("<lora:n>").unet, w("<lora:n>").dyn) == (1.0, 1.0, None)
    assert (w("<lora:n:0.6>").te, w("<lora:n:0.6>").unet) == (0.6, 0.6)  # unet defaults to te
    assert (w("<lora:n:0.6:0.3>").te, w("<lora:n:0.6:0.3>").unet) == (0.6, 0.3)
    assert w("<lora:n:0.6:0.3:16>").dyn == 16
    named = w("<lora:n:0.6:unet=0.2:te=0.9>")
    assert (named.te, named.unet) == (0.9, 0.2)
    with pytest.raises(PromptError, match="te 'abc'"):
        w("<lora:n:abc>")
