"""Conversations and chat templates: how a templated tokenizer formats prompts and replies for every stage."""

from __future__ import annotations

import pytest

from instructrl.datasets.records import Comparison, Demonstration, Message
from instructrl.datasets.tokenize import (
    prompt_ids,
    render_prompt,
    response_ids,
    stop_ids,
    tokenize_comparisons,
    tokenize_demonstrations,
)

TEMPLATE = "{prompt}\n"
CONVERSATION = [
    Message(role="system", content="be good"),
    Message(role="user", content="write a poem"),
    Message(role="assistant", content="the cat sat"),
    Message(role="user", content="why"),
]


def ids_of(tok, *words: str) -> list[int]:
    return [tok.convert_tokens_to_ids(w) for w in words]


def test_a_templated_prompt_and_reply_are_the_full_rendering_split_at_the_assistants_turn(chat_tokenizer):
    p = prompt_ids(chat_tokenizer, CONVERSATION, TEMPLATE)
    r = response_ids(chat_tokenizer, "the dog ran", CONVERSATION)
    full = chat_tokenizer.apply_chat_template(
        [m.model_dump() for m in CONVERSATION] + [{"role": "assistant", "content": "the dog ran"}],
        tokenize=False,
    )
    assert p + r == chat_tokenizer(full, add_special_tokens=False).input_ids
    assert p[-1] == chat_tokenizer.convert_tokens_to_ids("<|assistant|>")
    assert r == ids_of(chat_tokenizer, "the", "dog", "ran", "<|end|>")
    assert stop_ids(chat_tokenizer) == [
        chat_tokenizer.eos_token_id,
        chat_tokenizer.convert_tokens_to_ids("<|end|>"),
    ]


def test_a_plain_prompt_string_is_one_user_turn(chat_tokenizer):
    assert (
        render_prompt(chat_tokenizer, "write a poem", TEMPLATE)
        == "<|user|> write a poem <|end|><|assistant|>"
    )
    assert prompt_ids(chat_tokenizer, "write a poem", TEMPLATE) == prompt_ids(
        chat_tokenizer, [Message(role="user", content="write a poem")], TEMPLATE
    )


def test_the_sft_targets_are_exactly_the_assistant_tokens_and_its_end_of_turn(chat_tokenizer):
    demo = Demonstration(messages=[*CONVERSATION, Message(role="assistant", content="the dog ran")])
    [ex], stats = tokenize_demonstrations([demo], chat_tokenizer, TEMPLATE, 64, "error")
    assert ex.input_ids[ex.n_prompt :] == ids_of(chat_tokenizer, "the", "dog", "ran", "<|end|>")
    assert ex.input_ids[: ex.n_prompt] == ids_of(
        chat_tokenizer, "<|system|>", "be", "good", "<|end|>", "<|user|>", "write", "a", "poem", "<|end|>",
        "<|assistant|>", "the", "cat", "sat", "<|end|>", "<|user|>", "why", "<|end|>", "<|assistant|>",
    )  # fmt: skip
    assert stats.examples == 1


def test_a_tokenizer_without_a_template_formats_as_before(tiny_tokenizer):
    demo = Demonstration(prompt="write a poem", response="the dog ran")
    [ex], _ = tokenize_demonstrations([demo], tiny_tokenizer, TEMPLATE, 64, "error")
    expected = tiny_tokenizer("write a poem\n").input_ids
    assert ex.input_ids == expected + tiny_tokenizer("the dog ran").input_ids + [tiny_tokenizer.eos_token_id]
    assert ex.n_prompt == len(expected)
    assert stop_ids(tiny_tokenizer) == [tiny_tokenizer.eos_token_id]
    # a conversation falls back to its transcript through the prompt template
    convo = Demonstration(messages=[*CONVERSATION, Message(role="assistant", content="the dog ran")])
    [ex2], _ = tokenize_demonstrations([convo], tiny_tokenizer, TEMPLATE, 64, "error")
    transcript = "System: be good\n\nUser: write a poem\n\nAssistant: the cat sat\n\nUser: why"
    assert ex2.input_ids[: ex2.n_prompt] == tiny_tokenizer(transcript + "\n").input_ids


def test_the_reward_model_sees_the_sft_prompt_and_reply_ids(chat_tokenizer):
    demo = Demonstration(messages=[*CONVERSATION, Message(role="assistant", content="the dog ran")])
    comp = Comparison(messages=CONVERSATION, responses=["the dog ran", "no"], ranking=[1, 0])
    [sft], _ = tokenize_demonstrations([demo], chat_tokenizer, TEMPLATE, 64, "error")
    [rm], _ = tokenize_comparisons([comp], chat_tokenizer, TEMPLATE, 64, "error")
    assert rm.sequences[0] == sft.input_ids and rm.n_prompt == sft.n_prompt
    assert rm.sequences[1] == sft.input_ids[: sft.n_prompt] + ids_of(chat_tokenizer, "no", "<|end|>")
    assert rm.pairs == [(1, 0)]


# --- records -----------------------------------------------------------------------------------------------
def write_lines(path, *rows: dict):
    import json

    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


U, A = "user", "assistant"


def turn(role: str, content: str) -> dict:
    return {"role": role, "content": content}


def test_messages_records_read_as_conversations_and_round_trip(tmp_path):
    from instructrl.datasets.io import read_comparisons, read_demonstrations, read_prompts, to_json_line

    [p] = read_prompts(write_lines(tmp_path / "p.jsonl", {"messages": [turn(U, "hi")], "user_id": "u1"}))
    assert p.prompt == "hi" and p.conversation == [Message(role="user", content="hi")]
    three_turns = [turn(U, "hi"), turn(A, "hello"), turn(U, "and?")]
    [d] = read_demonstrations(write_lines(tmp_path / "d.jsonl", {"messages": three_turns, "response": "bye"}))
    assert (d.prompt, d.response) == ("User: hi\n\nAssistant: hello\n\nUser: and?", "bye")
    [d2] = read_demonstrations(
        write_lines(tmp_path / "d2.jsonl", {"messages": [turn(U, "hi"), turn(A, "hello")]})
    )
    assert (d2.messages, d2.response) == ([Message(role="user", content="hi")], "hello")
    assert (
        to_json_line(d2)
        == '{"prompt": "hi", "messages": [{"role": "user", "content": "hi"}], "response": "hello"}'
    )
    [c] = read_comparisons(
        write_lines(
            tmp_path / "c.jsonl", {"messages": [turn(U, "hi")], "responses": ["a", "b"], "ranking": [1, 0]}
        )
    )
    assert (c.prompt, c.pairs()) == ("hi", [(1, 0)])


@pytest.mark.parametrize(
    "kind, row, message",
    [
        ("prompts", {"messages": [turn(U, "a"), turn(U, "b")]}, r"field 'messages.1.role': is 'user', expected 'assistant'"),
        ("prompts", {"messages": [turn(U, "a"), turn(A, "b")]}, r"field 'messages.1.role': the last turn is 'assistant', expected 'user'"),
        ("prompts", {"messages": [turn(U, "a"), turn("system", "b")]}, r"field 'messages.1.role': is 'system'"),
        ("prompts", {"messages": [turn("bot", "a")]}, r"field 'messages.0.role': Input should be 'system', 'user' or 'assistant'"),
        ("prompts", {"messages": [turn(U, "")]}, r"field 'messages.0.content': String should have at least 1 character"),
        ("prompts", {"messages": []}, r"field 'messages': needs at least one user turn"),
        ("demonstrations", {"messages": [turn(U, "a")]}, r"field 'messages.0.role': the last turn is 'user'; a demonstration's last turn is the assistant's"),
        ("comparisons", {"messages": [turn(U, "a"), turn(A, "b")], "responses": ["x", "y"], "ranking": [0, 1]}, r"field 'messages.1.role': the last turn is 'assistant'"),
    ],
)  # fmt: skip
def test_bad_conversations_name_file_line_and_turn(tmp_path, kind, row, message):
    from instructrl.datasets.io import read_records
    from instructrl.errors import UserError

    f = write_lines(tmp_path / "x.jsonl", {"prompt": "ok", "user_id": "u", "response": "r", "responses": ["a", "b"],
                                           "ranking": [0, 1]}, {"user_id": "u"} | row)  # fmt: skip
    with pytest.raises(UserError, match=rf"x.jsonl:2: {message}"):
        read_records(f, kind)


def test_raw_text_benchmarks_can_bypass_the_chat_template(chat_tokenizer, tiny_tokenizer):
    raw = prompt_ids(chat_tokenizer, "the cat sat", "{prompt}", chat=False)
    assert raw == tiny_tokenizer("the cat sat").input_ids
    assert prompt_ids(chat_tokenizer, "the cat sat", "{prompt}") == ids_of(
        chat_tokenizer, "<|user|>", "the", "cat", "sat", "<|end|>", "<|assistant|>"
    )


def test_a_template_that_refuses_a_role_is_a_clear_error(chat_tokenizer):
    import copy

    from instructrl.errors import UserError

    tok = copy.deepcopy(chat_tokenizer)
    tok.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
        "{% endif %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|>{% endfor %}<|assistant|>"
    )
    with pytest.raises(
        UserError, match=r"refused a conversation \(System role not supported\).*roles: system, user"
    ):
        prompt_ids(tok, CONVERSATION, TEMPLATE)


def test_a_rounds_ab_answers_name_a_conversation_by_its_transcript(tiny_model_dir, tmp_path):
    import json

    from instructrl.pipeline.round import write_ab_answers

    prompts: list = ["write a poem", CONVERSATION]
    file = write_ab_answers(tmp_path, tiny_model_dir, tiny_model_dir, prompts, seed=0)
    rows = [json.loads(line) for line in file.read_text().splitlines()]
    assert [r["prompt"] for r in rows] == [
        "write a poem",
        "System: be good\n\nUser: write a poem\n\nAssistant: the cat sat\n\nUser: why",
    ]
    assert [r["response_a"] for r in rows] == [r["response_b"] for r in rows]  # same model, same seeds
