"""Parsers of the benchmarks' real annotation formats: fixtures in each format, and the errors bad input gets."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from lottery.data.annotations import (
    PARSERS,
    AnnotationError,
    normalise_answer,
    parse_gqa,
    parse_karpathy,
    parse_nlvr2,
    parse_refcoco,
    parse_snli_ve,
    parse_vcr,
    parse_vqa,
    vcr_image_key,
)
from lottery.data.examples import TASK_NAMES, TaskExample

FIXTURES = Path(__file__).parent / "fixtures" / "annotations"
VQA_QUESTIONS = FIXTURES / "vqa" / "v2_OpenEnded_mscoco_val2014_questions.json"
VQA_ANNOTATIONS = FIXTURES / "vqa" / "v2_mscoco_val2014_annotations.json"
GQA = FIXTURES / "gqa" / "val_balanced_questions.json"
VCR = FIXTURES / "vcr" / "val.jsonl"
SNLI_VE = FIXTURES / "snli_ve" / "snli_ve_dev.jsonl"
REFS = FIXTURES / "refcoco+" / "refs.json"
INSTANCES = FIXTURES / "refcoco+" / "instances.json"
KARPATHY_COCO = FIXTURES / "karpathy" / "dataset_coco.json"
KARPATHY_FLICKR = FIXTURES / "karpathy" / "dataset_flickr30k.json"
NLVR2 = FIXTURES / "nlvr2" / "dev.json"


def _raises_at(where: str, problem: str) -> pytest.RaisesExc:
    """AnnotationError whose message starts with `where` (file, line or record) and mentions `problem`."""
    return pytest.raises(AnnotationError, match=f"^{re.escape(where)}: .*{problem}")


def _write_json(path: Path, content: object) -> Path:
    path.write_text(json.dumps(content), encoding="utf-8")
    return path


def _jsonl_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_parsers_cover_every_task_and_errors_are_value_errors():
    assert set(PARSERS) == set(TASK_NAMES)
    assert issubclass(AnnotationError, ValueError)


# -- VQA ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "normalised"),
    [
        ("Two", "2"),
        ("a dog", "dog"),
        ("The Man", "man"),
        ("dog.", "dog"),
        ("3.5", "3.5"),
        ("yes!", "yes"),
        ("T-shirt", "t shirt"),
        ("1,000", "1000"),
        ("dont", "don't"),
        ("  none\n", "0"),
    ],
)
def test_vqa_answers_are_normalised_as_the_official_evaluation_does(answer, normalised):
    assert normalise_answer(answer) == normalised


def test_vqa_joins_questions_to_annotations_and_scores_normalised_answers():
    examples = parse_vqa(VQA_QUESTIONS, VQA_ANNOTATIONS)
    assert examples == [
        TaskExample(
            "vqa",
            "262148000",
            ("coco-262148",),
            "How many dogs are there?",
            # "2" x4 + "Two" + "two" = 6 -> 1; "3" + "three" = 2 -> 2/3
            {"answers": {"2": 1.0, "2 dogs": 1 / 3, "3": 2 / 3, "4": 1 / 3}, "answer_type": "number"},
        ),
        TaskExample(
            "vqa",
            "262148001",
            ("coco-262148",),
            "What animal is this?",
            # "a dog" + "Dog" -> "dog" x2; "the puppy!" joins the six "puppy"; "dont know" -> "don't know"
            {"answers": {"dog": 2 / 3, "don't know": 1 / 3, "puppy": 1.0}, "answer_type": "other"},
        ),
        TaskExample(
            "vqa",
            "393225000",
            ("coco-393225",),
            "Is the man wearing a hat?",
            {"answers": {"yes": 1.0}, "answer_type": "yes/no"},
        ),
    ]


def test_vqa_test_split_without_annotations_has_no_answers():
    examples = parse_vqa(VQA_QUESTIONS, None)
    assert [(e.uid, dict(e.fields)) for e in examples] == [
        ("262148000", {}),
        ("262148001", {}),
        ("393225000", {}),
    ]


def test_vqa_question_without_annotation_names_both_files_and_the_question(tmp_path):
    annotations = json.loads(VQA_ANNOTATIONS.read_text())
    del annotations["annotations"][2]
    path = _write_json(tmp_path / "annotations.json", annotations)
    with _raises_at(f"{VQA_QUESTIONS}: questions[2]", f"question 393225000 has no annotation in {path}"):
        parse_vqa(VQA_QUESTIONS, path)


def test_vqa_annotation_of_another_image_is_an_error(tmp_path):
    annotations = json.loads(VQA_ANNOTATIONS.read_text())
    annotations["annotations"][2]["image_id"] = 1
    path = _write_json(tmp_path / "annotations.json", annotations)
    with _raises_at(f"{VQA_QUESTIONS}: questions[2]", f"image 393225 here but image 1 at {path}"):
        parse_vqa(VQA_QUESTIONS, path)


def test_vqa_bad_question_record_names_file_and_record(tmp_path):
    questions = json.loads(VQA_QUESTIONS.read_text())
    questions["questions"][1]["question_id"] = "262148001"
    path = _write_json(tmp_path / "questions.json", questions)
    with _raises_at(f"{path}: questions[1]", "'question_id' must be an integer, got a string"):
        parse_vqa(path, VQA_ANNOTATIONS)


def test_vqa_bad_answer_names_the_answer(tmp_path):
    annotations = json.loads(VQA_ANNOTATIONS.read_text())
    annotations["annotations"][0]["answers"][3]["answer_confidence"] = "sure"
    path = _write_json(tmp_path / "annotations.json", annotations)
    with _raises_at(f"{path}: annotations[0].answers[3]", "answer_confidence 'sure' is not one of"):
        parse_vqa(VQA_QUESTIONS, path)


def test_vqa_duplicate_question_id_is_an_error(tmp_path):
    questions = json.loads(VQA_QUESTIONS.read_text())
    questions["questions"].append(questions["questions"][0])
    path = _write_json(tmp_path / "questions.json", questions)
    with _raises_at(f"{path}: questions[3]", "duplicate uid '262148000', first seen at .*questions\\[0\\]"):
        parse_vqa(path, VQA_ANNOTATIONS)


def test_invalid_json_file_names_the_file_and_line(tmp_path):
    path = tmp_path / "questions.json"
    path.write_text('{"questions": [\n{"image_id": 1,}\n]}', encoding="utf-8")
    with _raises_at(f"{path}:2", "invalid JSON"):
        parse_vqa(path, None)


# -- GQA ------------------------------------------------------------------------------------------------


def test_gqa_reads_questions_keyed_by_question_id():
    assert parse_gqa(GQA) == [
        TaskExample("gqa", "05451384", ("gqa-2354786",), "What is on the table?", {"answer": "pizza"}),
        TaskExample("gqa", "201640614", ("gqa-n161313",), "Is the woman's shirt black?", {"answer": "no"}),
    ]


def test_gqa_test_file_without_answers_parses_only_when_answers_are_not_required(tmp_path):
    questions = json.loads(GQA.read_text())
    for record in questions.values():
        del record["answer"], record["fullAnswer"]
    path = _write_json(tmp_path / "test_balanced_questions.json", questions)
    assert [dict(e.fields) for e in parse_gqa(path, require_answers=False)] == [{}, {}]
    with _raises_at(f"{path}: ['05451384']", "missing key 'answer'"):
        parse_gqa(path)


def test_gqa_bad_record_names_file_and_question_id(tmp_path):
    questions = json.loads(GQA.read_text())
    questions["201640614"]["question"] = "  "
    path = _write_json(tmp_path / "questions.json", questions)
    with _raises_at(f"{path}: ['201640614']", "'question' is empty"):
        parse_gqa(path)


# -- VCR ------------------------------------------------------------------------------------------------


def test_vcr_renders_object_references_and_keeps_the_objects_each_text_mentions():
    first, second = parse_vcr(VCR)
    assert first.uid == "val-0"
    assert first.images == (
        "vcr-lsmdc_3015_CHARLIE_ST_CLOUD-3015_CHARLIE_ST_CLOUD_00_23_57_935-00_24_00_783@0",
    )
    assert first.text == "Does person2 feel comfortable ?"
    assert first.fields["question_objects"] == [2]
    assert first.fields["answer_choices"][2] == "Yes , person2 is wearing something with thin straps ."
    assert first.fields["answer_objects"] == [[], [], [2], [2]]
    assert first.fields["rationale_choices"][2] == "person2 is looking at person0 and person1 ."
    assert first.fields["rationale_objects"] == [[2], [], [0, 1, 2], [0, 1, 2, 3]]
    assert (first.fields["answer_label"], first.fields["rationale_label"]) == (1, 1)
    assert second.text == "What are person0 and person1 doing ?"
    assert second.fields["rationale_choices"][2] == "person0, person1 and person2 are all students ."
    assert second.fields["answer_choices"][2] == "person0 is sitting in a chair3 ."
    assert (second.fields["answer_label"], second.fields["rationale_label"]) == (0, 0)


def test_vcr_image_key_has_no_dots_or_separators():
    assert vcr_image_key("movieclips_Spider-Man/a.b@2.jpg") == "vcr-movieclips_Spider-Man-a_b@2"
    assert vcr_image_key("lsmdc_x\\y.jpg") == "vcr-lsmdc_x-y"


def test_vcr_test_file_without_labels_parses_only_when_labels_are_not_required(tmp_path):
    records = _jsonl_records(VCR)
    for record in records:
        del record["answer_label"], record["rationale_label"]
    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    assert all("answer_label" not in e.fields for e in parse_vcr(path, require_labels=False))
    with _raises_at(f"{path}:1", "missing key 'answer_label'"):
        parse_vcr(path)


def _vcr_label_out_of_range(record: dict) -> None:
    record["rationale_label"] = 4


def _vcr_three_choices(record: dict) -> None:
    record["answer_choices"] = record["answer_choices"][:3]


def _vcr_object_out_of_range(record: dict) -> None:
    record["question"][2] = [0, 9]


def _vcr_bad_token(record: dict) -> None:
    record["rationale_choices"][1][0] = 7


def _vcr_empty_choice(record: dict) -> None:
    record["answer_choices"][0] = []


@pytest.mark.parametrize(
    ("corrupt", "problem"),
    [
        (_vcr_label_out_of_range, "'rationale_label' is 4, not in 0..3"),
        (_vcr_three_choices, "'answer_choices' has 3 choices, VCR has 4"),
        (_vcr_object_out_of_range, "question: token \\[0, 9\\] points past the 4 objects"),
        (_vcr_bad_token, "rationale_choices\\[1\\]: token 7 is neither a word nor"),
        (_vcr_empty_choice, "answer_choices\\[0\\]: is empty"),
    ],
)
def test_vcr_bad_record_names_file_and_line(tmp_path, corrupt, problem):
    first, second = _jsonl_records(VCR)
    corrupt(second)
    path = tmp_path / "val.jsonl"
    path.write_text(json.dumps(first) + "\n\n" + json.dumps(second) + "\n", encoding="utf-8")
    with _raises_at(f"{path}:3", problem):
        parse_vcr(path)


# -- SNLI-VE --------------------------------------------------------------------------------------------


def test_snli_ve_reads_hypotheses_about_flickr30k_images():
    assert parse_snli_ve(SNLI_VE) == [
        TaskExample(
            "snli-ve",
            "3416050480.jpg#4r1n",
            ("flickr30k-3416050480",),
            "A person is training his horse for a competition.",
            {"label": "neutral", "premise": "A person on a horse jumps over a broken down airplane."},
        ),
        TaskExample(
            "snli-ve",
            "3416050480.jpg#4r1c",
            ("flickr30k-3416050480",),
            "A person is at a diner, ordering an omelette.",
            {"label": "contradiction", "premise": "A person on a horse jumps over a broken down airplane."},
        ),
        TaskExample(
            "snli-ve",
            "2267923837.jpg#2r1e",
            ("flickr30k-2267923837",),
            "There are children present",
            {"label": "entailment", "premise": "Children smiling and waving at camera"},
        ),
    ]


def test_snli_ve_unknown_gold_label_is_an_error(tmp_path):
    records = _jsonl_records(SNLI_VE)
    records[1]["gold_label"] = "-"
    path = tmp_path / "snli_ve_dev.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    with _raises_at(f"{path}:2", "gold_label '-' is not one of entailment, neutral, contradiction"):
        parse_snli_ve(path)


# -- JSON Lines formats: the errors every line can have --------------------------------------------------

JSONL_FORMATS: dict[str, tuple[Callable[[Path], list[TaskExample]], Path, str]] = {
    # parser, fixture, a key every record needs
    "vcr": (parse_vcr, VCR, "img_fn"),
    "snli-ve": (parse_snli_ve, SNLI_VE, "Flikr30kID"),
    "nlvr2": (parse_nlvr2, NLVR2, "sentence"),
}


def _with_line_3(tmp_path: Path, fixture: Path, line: str) -> Path:
    """The fixture's first record on line 1, a blank line skipped, `line` on line 3, then the rest."""
    records = [json.dumps(r) for r in _jsonl_records(fixture)]
    path = tmp_path / fixture.name
    path.write_text("\n".join([records[0], "", line, *records[1:]]) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("task", JSONL_FORMATS)
def test_jsonl_invalid_json_names_file_and_line(tmp_path, task):
    parse, fixture, _ = JSONL_FORMATS[task]
    path = _with_line_3(tmp_path, fixture, '{"sentence": "unterminated')
    with _raises_at(f"{path}:3", "invalid JSON"):
        parse(path)


@pytest.mark.parametrize("task", JSONL_FORMATS)
def test_jsonl_missing_key_names_file_and_line(tmp_path, task):
    parse, fixture, key = JSONL_FORMATS[task]
    record = _jsonl_records(fixture)[-1]
    del record[key]
    path = _with_line_3(tmp_path, fixture, json.dumps(record))
    with _raises_at(f"{path}:3", f"missing key '{key}'"):
        parse(path)


@pytest.mark.parametrize("task", JSONL_FORMATS)
def test_jsonl_line_that_is_not_an_object_names_file_and_line(tmp_path, task):
    parse, fixture, _ = JSONL_FORMATS[task]
    path = _with_line_3(tmp_path, fixture, '["a", "list"]')
    with _raises_at(f"{path}:3", "expected a JSON object, got a list"):
        parse(path)


@pytest.mark.parametrize("task", JSONL_FORMATS)
def test_jsonl_duplicate_uid_names_both_lines(tmp_path, task):
    parse, fixture, _ = JSONL_FORMATS[task]
    path = _with_line_3(tmp_path, fixture, json.dumps(_jsonl_records(fixture)[0]))
    with _raises_at(f"{path}:3", f"duplicate uid .*, first seen at {re.escape(str(path))}:1"):
        parse(path)


# -- RefCOCO+ -------------------------------------------------------------------------------------------


def test_refcoco_gives_one_example_per_sentence_with_its_box_and_image_size():
    examples = parse_refcoco(REFS, INSTANCES, split="train")
    assert examples == [
        TaskExample(
            "refcoco+",
            "0-0",
            ("coco-581857",),
            "navy blue shirt",
            {
                "bbox": [103.93, 299.99, 134.22, 177.42],
                "image_size": [427, 640],
                "ref_id": 0,
                "ann_id": 1709258,
            },
        ),
        TaskExample(
            "refcoco+",
            "0-1",
            ("coco-581857",),
            "woman back in blue",
            {
                "bbox": [103.93, 299.99, 134.22, 177.42],
                "image_size": [427, 640],
                "ref_id": 0,
                "ann_id": 1709258,
            },
        ),
        TaskExample(
            "refcoco+",
            "1-2",
            ("coco-581857",),
            "man in white shirt",
            {"bbox": [251.0, 121.0, 149.0, 479.5], "image_size": [427, 640], "ref_id": 1, "ann_id": 1710195},
        ),
    ]


def test_refcoco_split_filters_and_none_reads_all():
    assert [e.uid for e in parse_refcoco(REFS, INSTANCES, split="testA")] == ["2-3", "2-4"]
    assert [e.text for e in parse_refcoco(REFS, INSTANCES, split="testA")] == ["guy on left", "black jacket"]
    assert len(parse_refcoco(REFS, INSTANCES)) == 5
    with _raises_at(str(REFS), "no refs of split 'val'"):
        parse_refcoco(REFS, INSTANCES, split="val")
    with pytest.raises(ValueError, match="unknown split 'testC'"):
        parse_refcoco(REFS, INSTANCES, split="testC")


def test_refcoco_bad_ref_names_file_and_record(tmp_path):
    refs = json.loads(REFS.read_text())
    refs[2]["sentences"][1]["sent"] = ""
    path = _write_json(tmp_path / "refs.json", refs)
    with _raises_at(f"{path}: [2].sentences[1]", "'sent' is empty"):
        parse_refcoco(path, INSTANCES)


def test_refcoco_ref_to_an_unknown_annotation_names_both_files(tmp_path):
    refs = json.loads(REFS.read_text())
    refs[1]["ann_id"] = 5
    path = _write_json(tmp_path / "refs.json", refs)
    with _raises_at(f"{path}: [1]", f"ann_id 5 is not in {re.escape(str(INSTANCES))}"):
        parse_refcoco(path, INSTANCES)


def test_refcoco_bad_box_names_the_instances_record(tmp_path):
    instances = json.loads(INSTANCES.read_text())
    instances["annotations"][2]["bbox"] = [12.0, 40.0, 198.3]
    path = _write_json(tmp_path / "instances.json", instances)
    with _raises_at(f"{path}: annotations[2]", "'bbox' must be \\[x, y, w, h\\]"):
        parse_refcoco(REFS, path)


# -- Karpathy splits (retrieval) ------------------------------------------------------------------------


def test_karpathy_coco_gives_one_example_per_caption_keyed_by_cocoid():
    assert parse_karpathy(KARPATHY_COCO, split="test") == [
        TaskExample(
            "retrieval",
            "770337",
            ("coco-391895",),
            "A man with a red helmet on a small moped on a dirt road.",
            {"caption_index": 0},
        ),
        TaskExample(
            "retrieval",
            "771687",
            ("coco-391895",),
            "Man riding a motor bike on a dirt road on the countryside.",
            {"caption_index": 1},
        ),
        TaskExample(
            "retrieval",
            "772707",
            ("coco-391895",),
            "A man riding on the back of a motorcycle.",
            {"caption_index": 2},
        ),
    ]
    assert [e.images for e in parse_karpathy(KARPATHY_COCO, split="restval")] == [("coco-522418",)] * 2
    assert len(parse_karpathy(KARPATHY_COCO)) == 6


def test_karpathy_flickr30k_keys_images_by_file_stem():
    examples = parse_karpathy(KARPATHY_FLICKR)
    assert [(e.uid, e.images, e.fields["caption_index"]) for e in examples] == [
        ("0", ("flickr30k-1000092795",), 0),
        ("1", ("flickr30k-1000092795",), 1),
        ("5", ("flickr30k-10002456",), 0),
    ]
    assert examples[1].text == "Two young, White males are outside near many bushes."


def test_karpathy_bad_sentence_names_file_and_record(tmp_path):
    content = json.loads(KARPATHY_COCO.read_text())
    del content["images"][1]["sentences"][1]["sentid"]
    path = _write_json(tmp_path / "dataset_coco.json", content)
    with _raises_at(f"{path}: images[1].sentences[1]", "missing key 'sentid'"):
        parse_karpathy(path)


def test_karpathy_unknown_split_is_rejected():
    with pytest.raises(ValueError, match="unknown split 'dev'; known: train, restval, val, test"):
        parse_karpathy(KARPATHY_COCO, split="dev")


# -- NLVR2 ----------------------------------------------------------------------------------------------


def test_nlvr2_names_both_images_of_the_pair():
    assert parse_nlvr2(NLVR2) == [
        TaskExample(
            "nlvr2",
            "dev-850-0-0",
            ("dev-850-0-img0", "dev-850-0-img1"),
            "The left image contains twice the number of dogs as the right image, "
            "and at least two dogs in total are standing.",
            {"label": False},
        ),
        TaskExample(
            "nlvr2",
            "dev-33-1-1",
            ("dev-33-1-img0", "dev-33-1-img1"),
            "One image shows exactly two brown acorns in back-to-back caps on green foliage.",
            {"label": True},
        ),
    ]


def test_nlvr2_label_must_be_the_string_true_or_false(tmp_path):
    record = _jsonl_records(NLVR2)[1]
    record["label"] = True
    path = _with_line_3(tmp_path, NLVR2, json.dumps(record))
    with _raises_at(f"{path}:3", "'label' must be a string, got a boolean"):
        parse_nlvr2(path)
