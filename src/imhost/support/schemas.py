"""What the help center's API, pages and CLI accept and return."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from imhost.kit.text import MultilineText, PlainText

SLUG_PATTERN = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"
MAX_BODY = 100_000


class CategoryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    slug: PlainText = Field(min_length=1, max_length=80, pattern=SLUG_PATTERN)
    title: PlainText = Field(min_length=1, max_length=120)
    description: PlainText = Field("", max_length=500)
    position: int = Field(0, ge=0, le=10_000)


class CategoryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    slug: str
    title: str
    description: str
    position: int


class ArticleIn(BaseModel):
    """A new article, or every field of an edited one."""

    model_config = ConfigDict(extra="forbid")

    slug: PlainText = Field(min_length=1, max_length=120, pattern=SLUG_PATTERN)
    category: PlainText = Field(min_length=1, max_length=80, description="The category's slug.")
    title: PlainText = Field(min_length=1, max_length=200)
    summary: PlainText = Field("", max_length=500)
    body: MultilineText = Field("", max_length=MAX_BODY, description="Markdown (CommonMark).")
    status: Literal["draft", "published"] = "draft"
    visibility: Literal["public", "internal"] = "public"
    position: int = Field(0, ge=0, le=10_000)


class ArticleOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    slug: str
    category_id: str
    title: str
    summary: str
    status: str
    visibility: str
    updated_at: datetime
    published_at: datetime | None
    author_label: str


class ArticleFull(ArticleOut):
    body: str
    body_html: str


class ArticleStaffOut(ArticleFull):
    views: int
    helpful_yes: int
    helpful_no: int
    suggestions_opened: int


class SearchHitOut(BaseModel):
    slug: str
    title: str
    summary: str
    url: str
    highlight: str = Field(description="HTML: the matching words in <mark>, nothing else.")
    updated_at: datetime


class SearchOut(BaseModel):
    query: str
    total: int
    matched_all: bool
    results: list[SearchHitOut]


class VoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    helpful: bool


class SuggestIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: PlainText = Field(min_length=1, max_length=500)
    limit: int = Field(5, ge=1, le=10)


class SuggestionOpenedIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    context: PlainText | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
