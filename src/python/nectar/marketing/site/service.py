"""The public site's content: published blog posts (written in admin) and the sitemap's pages."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nectar.schema.models import BlogPost
from nectar.shared.content import render_markdown

POSTS_PER_PAGE = 10


def _published(now: datetime):
    """A post is public once it is published and its date has come; drafts and future posts are not."""
    return (BlogPost.status == "published") & (BlogPost.published_at <= now)


@dataclass(frozen=True)
class PostPage:
    posts: list[BlogPost]
    page: int
    pages: int


def published_posts(session: Session, page: int = 1, per_page: int = POSTS_PER_PAGE) -> PostPage:
    """One page of public posts, newest first."""
    total = (
        session.scalar(select(func.count()).select_from(BlogPost).where(_published(datetime.now(UTC)))) or 0
    )
    pages = max(1, -(-total // per_page))
    page = min(max(1, page), pages)
    return PostPage(latest_posts(session, per_page, offset=(page - 1) * per_page), page, pages)


def latest_posts(session: Session, count: int, offset: int = 0) -> list[BlogPost]:
    """The newest public posts (the landing page's and the feed's), without counting them all."""
    return list(
        session.scalars(
            select(BlogPost)
            .where(_published(datetime.now(UTC)))
            .order_by(BlogPost.published_at.desc(), BlogPost.slug)
            .offset(offset)
            .limit(count)
        )
    )


def published_post(session: Session, slug: str) -> BlogPost | None:
    return session.scalar(select(BlogPost).where(BlogPost.slug == slug, _published(datetime.now(UTC))))


def all_published_posts(session: Session) -> list[BlogPost]:
    """Every public post (slug and dates only matter), for the sitemap."""
    return list(
        session.scalars(
            select(BlogPost).where(_published(datetime.now(UTC))).order_by(BlogPost.published_at.desc())
        )
    )


def post_html(post: BlogPost) -> str:
    return render_markdown(post.body_markdown)
