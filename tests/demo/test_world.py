"""The demo world: determinism, gold standard on hand-made examples, parse-back, users, corpus, benchmark."""

from __future__ import annotations

import itertools
import os
import random
import re
import statistics
import subprocess
import sys
from collections import Counter

import pytest

from instructrl.demo.knowledge import (
    CREATURES,
    Claim,
    read_claims,
    split_sentences,
    tokenize,
)
from instructrl.demo.tasks import FAMILIES, list_items
from instructrl.demo.world import (
    FAMILY_SHARES,
    FEW_SHOT_STOP,
    UserConfig,
    World,
    benchmark_correct,
    few_shot_answer,
)

PII_MARKERS = ("@", "call me at", "card number", "i live at")


@pytest.fixture(scope="module")
def world() -> World:
    return World(seed=0)


@pytest.fixture(scope="module")
def prompts(world: World):
    return world.user_prompts()


@pytest.fixture(scope="module")
def corpus(world: World) -> list[str]:
    return world.pretraining_corpus()


def test_same_seed_gives_the_same_world_and_another_seed_a_different_one():
    a, b, c = World(0), World(0), World(1)
    assert a.user_prompts() == b.user_prompts()
    assert a.pretraining_corpus(500) == b.pretraining_corpus(500)
    assert a.benchmark() == b.benchmark()
    assert a.few_shot_prefix(3) == b.few_shot_prefix(3)
    assert a.kb != c.kb
    assert a.pretraining_corpus(500) != c.pretraining_corpus(500)


def test_the_world_does_not_depend_on_python_hash_randomisation():
    code = (
        "import hashlib, random; from instructrl.demo.world import World; "
        "from instructrl.demo.labelers import make_labelers; w = World(0); rng = random.Random(0); "
        "p = w.make_prompt(rng); c = w.sample_candidates(p, 6, rng); "
        "out = [r.prompt for r in w.user_prompts()] + w.pretraining_corpus(300) + c "
        "+ [str(lab.rank(p, c)) + lab.write_demonstration(p) for lab in make_labelers(w)]; "
        "print(hashlib.sha256(repr(out).encode()).hexdigest())"
    )
    digests = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(digests) == 1


# ---- gold standard on hand-made examples -----------------------------------------------------------------
def test_open_qa_right_wrong_rambling_cut_off_rude(world: World):
    c = world.kb.creatures["blorp"]
    wrong = next(x for x in ("red", "blue") if x != c.colour)
    p = "what colour is the blorp ?"
    score = world.gold_score
    assert score(p, f"the blorp is {c.colour} .") == 1.0
    assert score(p, f"{c.colour} .") == 1.0
    # wrong answer: only the form is right (0.25), and it is a false statement (x 0.5)
    assert score(p, f"the blorp is {wrong} .") == pytest.approx(0.125)
    # right answer, then a forum reply / a second instruction: 0.8 per extra sentence
    assert score(p, f"the blorp is {c.colour} . reply by ben : i have the same question .") == pytest.approx(
        0.8
    )
    assert score(p, f"the blorp is {c.colour} . list three colours . i like the rain .") == pytest.approx(0.6)
    assert score(p, f"the blorp is {c.colour} , i") == pytest.approx(0.7)  # cut off
    assert score(p, "the blorp is") == 0.0  # no answer: no credit for the form either
    assert score(p, f"ugh , the blorp is {c.colour} .") == pytest.approx(0.5)
    assert score(p, f"the blorp is {c.colour} . the blorp is {c.colour} .") == pytest.approx(0.8 * 0.6)
    assert score(p, "") == 0.0
    # decoded text without spaces before punctuation reads the same
    assert score(p, f"the blorp is {c.colour}.") == 1.0


def test_open_qa_requested_form(world: World):
    c = world.kb.creatures["zib"]
    p = "what does the zib eat ? answer in one word ."
    assert world.gold_score(p, f"{c.food} .") == 1.0
    assert world.gold_score(p, f"the zib eats {c.food} .") == pytest.approx(0.75)
    land = "zorbia"
    city = world.kb.capitals[land]
    assert world.gold_score(f"what is the capital of {land} ?", f"the capital of {land} is {city} .") == 1.0
    assert world.gold_score(f"{city} is the capital of which land ?", f"{land} .") == 1.0


def test_closed_qa_reads_the_text_not_the_world(world: World):
    text = "mia lives in ostrel . mia has a red hat and three cats ."
    p = f"how many cats does mia have ? answer using this text : {text}"
    assert world.gold_score(p, "mia has three cats .") == 1.0
    assert world.gold_score(p, "3 .") == 1.0
    assert world.gold_score(p, "mia has four cats .") == pytest.approx(0.2)
    p2 = f"read this : {text} what colour is the hat ?"
    assert world.gold_score(p2, "the hat is red .") == 1.0
    assert world.gold_score(p2, "the hat is blue .") == pytest.approx(0.2)


def test_classification_label_and_brevity(world: World):
    p = "is this review positive or negative ? the soup was cold and the staff was rude ."
    assert world.gold_score(p, "negative .") == 1.0
    assert world.gold_score(p, "positive .") == pytest.approx(0.2)
    assert world.gold_score(p, "positive or negative .") == pytest.approx(0.2)
    assert world.gold_score(p, "the review is negative because the soup was cold .") == pytest.approx(0.9)


def test_extraction_scores_the_f1_of_the_items(world: World):
    p = "list the names in this text : anna , ben and carl went to the river ."
    assert world.gold_score(p, "anna , ben , carl .") == 1.0
    assert world.gold_score(p, "anna , ben .") == pytest.approx(0.8 * 0.8 + 0.2)
    assert world.gold_score(p, "anna , ben , carl , dora .") == pytest.approx(0.8 * (6 / 7) + 0.2)


def test_brainstorming_count_membership_and_format(world: World):
    p = "list three colours ."
    assert world.gold_score(p, "red , blue and green .") == 1.0
    assert world.gold_score(p, "red , blue .") == pytest.approx(0.3 * 0.5 + 0.5 + 0.2)
    assert world.gold_score(p, "red , blue , honey .") == pytest.approx(0.3 + 0.5 * 2 / 3 + 0.2)
    assert world.gold_score(p, "red , red , red .") == pytest.approx(0.3 + 0.5 / 3 + 0.2)
    numbered = "list three colours as a numbered list ."
    assert world.gold_score(numbered, "1 . red 2 . blue 3 . green .") == 1.0
    assert world.gold_score(numbered, "1. red 2. blue 3. green.") == 1.0
    assert world.gold_score(numbered, "red , blue , green .") == pytest.approx(0.8)
    # a list that needs the knowledge base
    land = "quelland"
    members = world.kb.with_value("home", land)
    outsider = next(c for c in CREATURES if c not in members)
    p = f"list two creatures that live in {land} ."
    assert world.gold_score(p, f"the {members[0]} , the {members[1]} .") == 1.0
    assert world.gold_score(p, f"the {members[0]} , the {outsider} .") == pytest.approx(0.75)


def test_list_items_reads_plain_numbered_and_lead_in_lists():
    def items(text):
        return list_items(split_sentences(tokenize(text))[0])

    assert items("red , blue and green .") == (["red", "blue", "green"], False)
    assert items("here are two creatures : the zib , the blorp .") == (["zib", "blorp"], False)
    assert items("1 . read a book 2 . bake bread .") == (["read a book", "bake bread"], True)


def test_generation_length_subject_mood_and_truth(world: World):
    c = world.kb.creatures["tork"]
    p = "write a happy story about the tork in two sentences ."
    good = "one day the tork went to the river . the tork was very happy ."
    assert world.gold_score(p, good) == 1.0
    # one sentence too many: count 0.5 (x 0.35) and 0.8 for not stopping
    assert world.gold_score(p, good + " it sang a song .") == pytest.approx((0.35 * 0.5 + 0.65) * 0.8)
    assert world.gold_score(p, "one day the tork went to the river . the tork felt sad .") == pytest.approx(
        0.7
    )
    # a story about another creature earns nothing for its length or mood
    assert world.gold_score(p, "one day the zib went to the river . the zib was very happy .") == 0.0
    wrong = next(x for x in ("red", "blue") if x != c.colour)
    assert world.gold_score(p, f"the {wrong} tork went to the river . the tork was very happy .") == 0.5
    d = "describe the tork in one sentence ."
    assert world.gold_score(d, f"the tork is a {c.size} {c.colour} creature from {c.home} .") == 1.0
    assert world.gold_score(d, "the tork is a creature .") == pytest.approx(0.5)


def test_rewrite_polite_without_and_question(world: World):
    p = "rewrite this politely : give me the cup now !"
    assert world.gold_score(p, "could you please give me the cup ?") == 1.0
    assert world.gold_score(p, "please give me the cup , thank you .") == 1.0
    assert world.gold_score(p, "give me the cup now !") == pytest.approx(0.4)
    assert world.gold_score(p, "could you please give me the book ?") == pytest.approx(0.5)
    size = world.kb.creatures["blorp"].size
    w = f"rewrite this without the word very : the blorp is very {size} ."
    assert world.gold_score(w, f"the blorp is {size} .") == 1.0
    assert world.gold_score(w, f"the blorp is very {size} .") < 0.6
    q = "make a question out of this : the zib eats nuts ."
    assert world.gold_score(q, "does the zib eat nuts ?") == 1.0
    assert world.gold_score(q, "the zib eats nuts .") < 0.6


def test_summarization_keeps_the_facts_in_one_sentence(world: World):
    c = world.kb.creatures["pim"]
    text = f"the pim is {c.colour} . the pim lives in {c.home} . the pim eats {c.food} ."
    p = f"summarize this in one sentence : {text}"
    assert world.gold_score(p, f"the pim is a {c.colour} creature from {c.home} that eats {c.food} .") == 1.0
    assert world.gold_score(p, f"the pim is a {c.colour} creature from {c.home} .") == pytest.approx(0.8)
    # copying the text back: not one sentence (0.2 lost) and two sentences too many (0.6)
    assert world.gold_score(p, text) == pytest.approx(0.8 * 0.6)


def test_chat_replies_in_kind(world: World):
    assert (
        world.gold_score("hi . i feel sad today .", "i am sorry to hear that . i hope you feel better soon .")
        == 1.0
    )
    assert world.gold_score("hi . i feel sad today .", "that is great news !") == pytest.approx(0.4)
    assert world.gold_score("thank you for your help !", "ok .") == 0.0
    c = world.kb.creatures["blorp"]
    assert world.gold_score("hey , what colour is the blorp ?", f"hello ! the blorp is {c.colour} .") == 1.0


def test_every_family_good_responses_score_one_and_flawed_ones_less(world: World):
    rng = random.Random(0)
    for name, family in FAMILIES.items():
        flawed = []
        for _ in range(200):
            prompt, task = family.make(world.kb, rng)
            assert world.gold_score(prompt, world.respond(prompt, rng)) == 1.0, (name, prompt)
            flawed.append(world.gold_score(prompt, family.flawed(task, world.kb, rng)))
        assert max(flawed) < 0.95, name
        assert statistics.mean(flawed) < 0.85, name


def test_every_family_parses_back_its_prompts(world: World):
    rng = random.Random(1)
    for family in FAMILIES.values():
        for template in family.templates:
            for _ in range(5):
                slots = family.sample(template.variant, world.kb, rng)
                used = {k: v for k, v in slots.items() if "{" + k + "}" in template.text}
                prompt = template.fill(used)
                task = world.parse(prompt)
                assert task is not None, prompt
                assert (task.family, task.variant, task.form, task.slots) == (
                    family.name,
                    template.variant,
                    template.form,
                    used,
                ), prompt


def test_parse_skips_openers_and_thanks_and_rejects_other_text(world: World):
    task = world.parse("hello . my email is anna.b@mailbox.com . list three colours . thanks !")
    assert task is not None and (task.family, task.slots["n"]) == ("brainstorming", "three")
    assert world.parse("what is the meaning of life ?") is None
    with pytest.raises(ValueError, match="not an instruction"):
        world.gold_score("what is the meaning of life ?", "42 .")


def test_claim_reader():
    def claims(text):
        return read_claims(split_sentences(tokenize(text)))

    assert claims("the blorp is a big blue creature from zorbia that eats nuts .") == [
        Claim("blorp", "size", "big"),
        Claim("blorp", "colour", "blue"),
        Claim("blorp", "home", "zorbia"),
        Claim("blorp", "food", "nuts"),
    ]
    assert claims("the small red zib saw the blorp . it lives in nuvia .") == [
        Claim("zib", "colour", "red"),
        Claim("zib", "size", "small"),
        Claim("blorp", "home", "nuvia"),
    ]
    assert claims("plimtown is the capital of zorbia .") == [Claim("zorbia", "capital", "plimtown")]
    assert claims("is the blorp blue ?") == []
    assert claims("the blorp went to the river and found red berries .") == []


def test_every_fact_in_the_corpus_is_true(world: World, corpus: list[str]):
    claims = [c for doc in corpus[:3000] for c in read_claims(split_sentences(tokenize(doc)))]
    assert len(claims) > 3000
    assert all(world.kb.is_true(c) for c in claims)


# ---- users -----------------------------------------------------------------------------------------------
def test_users_are_heavy_tailed_with_a_few_over_the_cap(prompts):
    per_user = Counter(p.user_id for p in prompts)
    assert 6000 <= len(prompts) <= 8500
    assert sum(n > 200 for n in per_user.values()) == UserConfig().n_heavy_users
    assert statistics.median(per_user.values()) <= 3
    assert max(per_user.values()) > 300


def test_users_send_duplicates_near_duplicates_and_personal_information(prompts):
    texts = [p.prompt for p in prompts]
    exact = 1 - len(set(texts)) / len(texts)
    assert 0.15 <= exact <= 0.35  # resends (4%) plus common prompts ("hello ! how are you today ?")
    seen: dict[str, set[str]] = {}
    near = 0
    for p in prompts:
        if p.prompt.endswith(" thanks !") and p.prompt[:-9] in seen.get(p.user_id, set()):
            near += len(p.prompt) >= 100
        seen.setdefault(p.user_id, set()).add(p.prompt)
    assert 0.01 <= near / len(prompts) <= 0.04
    pii = [t for t in texts if any(m in t for m in PII_MARKERS)]
    assert 0.01 <= len(pii) / len(texts) <= 0.03
    # only prompts with personal information have digits, so the intake's detectors cannot misfire
    assert all(not any(ch.isdigit() for ch in t) for t in texts if t not in pii)


def test_user_prompts_parse_and_follow_the_family_shares(world: World, prompts):
    families = Counter(world.task(p.prompt).family for p in prompts)
    for name, share in FAMILY_SHARES.items():
        assert abs(families[name] / len(prompts) - share) < 0.05, name


def test_prompts_and_responses_are_short(world: World, prompts):
    rng = random.Random(0)
    clean = [p.prompt for p in prompts if not any(m in p.prompt for m in PII_MARKERS)]
    lengths = sorted(len(tokenize(p)) for p in clean)
    assert lengths[int(0.95 * len(lengths))] <= 28 and lengths[-1] <= 36
    responses = [len(tokenize(world.respond(p, rng))) for p in clean[:3000]]
    assert max(responses) <= 28 and statistics.mean(responses) < 12


# ---- corpus, few-shot prompts, benchmark -----------------------------------------------------------------
def test_vocabulary_is_small(world: World, prompts, corpus: list[str]):
    rng = random.Random(0)
    clean = [p.prompt for p in prompts if not any(m in p.prompt for m in PII_MARKERS)]
    vocab = {t for text in corpus + clean + [world.respond(p, rng) for p in clean] for t in tokenize(text)}
    assert 380 <= len(vocab) <= 900
    assert set(tokenize(" ".join(clean))) <= {t for d in corpus for t in tokenize(d)}


def test_text_never_puts_a_before_a_vowel(world: World, corpus: list[str]):
    rng = random.Random(0)
    texts = corpus[:3000] + [world.respond(p, rng) for p in (world.make_prompt(rng) for _ in range(3000))]
    assert {m for t in texts for m in re.findall(r"\ba [aeiou]\w*", t)} <= {"a one"}


def test_corpus_mixes_encyclopedia_qa_pages_and_threads_that_do_not_answer(world: World, corpus: list[str]):
    assert 700_000 <= sum(len(tokenize(d)) for d in corpus) <= 1_000_000
    assert sum(d.startswith("questions and answers . question :") for d in corpus) > 1000
    # in threads, an instruction is followed equally often by an answer, an instruction, a digression, a reply
    rng = random.Random(0)
    follows = Counter(
        b[0]
        for _ in range(2000)
        for a, b in itertools.pairwise(world.thread_parts(rng))
        if a[0] == "instruction"
    )
    assert set(follows) == {"answer", "instruction", "digression", "reply"}
    assert all(0.2 <= n / follows.total() <= 0.3 for n in follows.values())


def test_few_shot_prefix_has_solved_examples_in_the_qa_page_style(world: World):
    prefix = world.few_shot_prefix(3)
    assert prefix.startswith("questions and answers . question : ")
    assert not any(FEW_SHOT_STOP in t for t in (world.make_prompt(random.Random(i)) for i in range(2000)))
    assert prefix.count("question :") == 3 and prefix.count("answer :") == 3
    for pair in prefix.split(" question : ")[1:]:
        prompt, answer = pair.split(" answer : ")
        assert world.gold_score(prompt, answer) == 1.0
    full = world.few_shot_prompt("list three colours .", 3)
    assert full == f"{prefix} {FEW_SHOT_STOP} list three colours . answer :"
    assert few_shot_answer(" red, blue, green. question: list two pets. answer:") == "red , blue , green ."


def test_benchmark_facts_are_stated_in_the_corpus(world: World, corpus: list[str]):
    items = world.benchmark()
    assert len(items) == 8 + 4 * 32 and len(set(items)) == len(items)
    text = " ".join(corpus)
    assert all(f"{q} {a} ." in text for q, a in items)
    assert len(world.benchmark(20)) == 20
    assert benchmark_correct("zorbia", "zorbia. the blorp")
    assert not benchmark_correct("zorbia", "the land of zorbia")


def test_sample_candidates_mix_good_and_flawed(world: World):
    rng = random.Random(0)
    scores = []
    for _ in range(300):
        prompt = world.make_prompt(rng)
        scores += [world.gold_score(prompt, r) for r in world.sample_candidates(prompt, 6, rng)]
    perfect = sum(s == 1.0 for s in scores) / len(scores)
    assert 0.3 <= perfect <= 0.6
    assert sum(s < 0.5 for s in scores) / len(scores) > 0.2
