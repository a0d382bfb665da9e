"""Query parsing: operators, weights, image terms and the UI's "without" field."""

from __future__ import annotations

import dataclasses

import pytest

from indexer.search.parse import QueryTerm, merge_terms, parse_query


def text(weight: float, value: str) -> QueryTerm:
    return QueryTerm(weight, "text", value)


def image(weight: float, value: str) -> QueryTerm:
    return QueryTerm(weight, "image", value)


def test_plain_query_is_one_text_term():
    assert parse_query("kids on a beach at sunset") == [text(1.0, "kids on a beach at sunset")]


def test_whitespace_is_trimmed_and_collapsed():
    assert parse_query("  red \t  car  ") == [text(1.0, "red car")]


def test_plus_and_minus_operators():
    assert parse_query("beach + sunset - people") == [
        text(1.0, "beach"),
        text(1.0, "sunset"),
        text(-1.0, "people"),
    ]


def test_weights():
    assert parse_query("2:dog + 0.5:cat") == [text(2.0, "dog"), text(0.5, "cat")]
    assert parse_query("0.5:red car - 3: rain") == [text(0.5, "red car"), text(-3.0, "rain")]


@pytest.mark.parametrize(
    "query", ["t-shirt", "x-ray of a hand", "beach -people", "c++ book", "a+b"]
)
def test_operators_need_surrounding_whitespace(query):
    assert parse_query(query) == [text(1.0, query)]


def test_leading_operator_starts_the_query():
    assert parse_query("-people") == [text(-1.0, "people")]
    assert parse_query("- people + dog") == [text(-1.0, "people"), text(1.0, "dog")]
    assert parse_query("+dog") == [text(1.0, "dog")]


def test_image_terms():
    assert parse_query("img:/a/b.jpg - id:5") == [image(1.0, "/a/b.jpg"), image(-1.0, "id:5")]
    assert parse_query("2:IMG:/photos/x.png + beach") == [
        image(2.0, "/photos/x.png"),
        text(1.0, "beach"),
    ]


def test_quotes_protect_paths_with_operators():
    assert parse_query('img:"/p/2019 - Italy/a.jpg" + x-ray') == [
        image(1.0, "/p/2019 - Italy/a.jpg"),
        text(1.0, "x-ray"),
    ]
    assert parse_query('"rock - paper"') == [text(1.0, "rock - paper")]


def test_time_of_day_is_not_a_weight():
    assert parse_query("10:30 meeting") == [text(1.0, "10:30 meeting")]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", "empty query"),
        ("   ", "empty query"),
        ("beach +", "empty term"),
        ("beach + - dog", "empty term"),
        ("0:dog", "must not be 0"),
        ("2:", "without a term"),
        ("img:", "without a path"),
        ("id:abc", "must be a number"),
    ],
)
def test_invalid_queries_raise(query, message):
    with pytest.raises(ValueError, match=message):
        parse_query(query)


def test_query_term_is_frozen():
    term = parse_query("dog")[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        term.weight = 3.0  # type: ignore[misc]


def test_merge_terms_adds_comma_separated_negatives():
    assert merge_terms("beach + sunset", "people, cars ,,") == [
        text(1.0, "beach"),
        text(1.0, "sunset"),
        text(-1.0, "people"),
        text(-1.0, "cars"),
    ]
    assert merge_terms("dog", 'id:7, img:"/a,b.jpg", 2:rain') == [
        text(1.0, "dog"),
        image(-1.0, "id:7"),
        image(-1.0, "/a,b.jpg"),
        text(-2.0, "rain"),
    ]


def test_merge_terms_optional_parts():
    assert merge_terms("dog", None) == [text(1.0, "dog")]
    assert merge_terms(None, "people") == [text(-1.0, "people")]
    assert merge_terms("  ", "people") == [text(-1.0, "people")]
    with pytest.raises(ValueError, match="empty query"):
        merge_terms(None, " , ")
