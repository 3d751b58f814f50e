"""The twitter clone in the real browser, on real nodes."""

from __future__ import annotations

import pytest
from playwright.async_api import Locator, Page, expect

from tests.apps.peers import share_line
from tests.browser import Pages
from tests.conftest import Node, NodeFactory

APP = "apps.twitter_clone"
LIVE = 20_000  # ms: what "shows up without reload" may take, at most


@pytest.fixture
async def alice(node_factory: NodeFactory) -> Node:
    return await node_factory("alice", app=APP)


async def set_profile(page: Page, name: str, bio: str) -> None:
    await page.locator("#profile-name").fill(name)
    await page.locator("#profile-bio").fill(bio)
    await page.get_by_role("button", name="save profile").click()
    await expect(page.locator("#profile-saved")).to_have_text("saved")


async def write_post(page: Page, text: str) -> Locator:
    await page.locator("#compose-text").fill(text)
    await page.get_by_role("button", name="post", exact=True).click()
    await expect(page.locator("#compose-text")).to_have_value("")
    return post_with(page, text)


def post_with(page: Page, text: str) -> Locator:
    return page.locator("#timeline > article.post").filter(
        has=page.locator(":scope > p.text", has_text=text)
    )


async def reply_to(post: Locator, text: str) -> None:
    await post.locator(":scope > .actions .reply-button").click()
    form = post.locator(":scope > .reply-form")
    await form.locator("textarea").fill(text)
    await form.get_by_role("button", name="reply").click()
    await expect(form).to_be_hidden()


async def test_profile_post_reply_and_like_on_one_node(alice: Node, pages: Pages) -> None:
    page = await pages.open(alice)
    await expect(page.locator("#empty")).to_be_visible(timeout=LIVE)
    await set_profile(page, "Alice", "writes things down")
    post = await write_post(page, "Hello from Alice's own node")
    await expect(post.locator(".name").first).to_have_text("Alice", timeout=LIVE)
    await expect(post.locator(":scope > .meta time")).to_have_text("just now")
    await reply_to(post, "and a reply to myself")
    await expect(post.locator(".replies .text")).to_have_text("and a reply to myself")
    like = post.locator(":scope > .actions .like")
    await like.click()
    await expect(like).to_have_attribute("aria-pressed", "true", timeout=LIVE)
    await expect(like.locator(".count")).to_have_text("1")
    await expect(page.locator("#status")).to_have_text("live")
    await pages.screenshot(page)
    await like.click()  # unlike
    await expect(like.locator(".count")).to_have_text("0", timeout=LIVE)
    async with alice.client() as http:
        profile = await http.get("/profile", headers={"Accept": "application/json"})
        assert profile.json() == {"name": "Alice", "bio": "writes things down"}
        posts = (await http.get("/posts/", headers={"Accept": "application/json"})).json()
        assert len(posts["keys"]) == 2


async def test_a_post_with_html_in_it_renders_as_text(alice: Node, pages: Pages) -> None:
    page = await pages.open(alice)
    hostile = (
        "<script>window.pwned = 1</script><b>bold?</b>"
        '<img src=x onerror="window.pwned = 2"> & &amp; <i>'
    )
    post = await write_post(page, hostile)
    text = post.locator(":scope > p.text")
    await expect(text).to_have_text(hostile, timeout=LIVE)
    assert await text.locator("b, img, script, i").count() == 0
    assert await page.evaluate("() => window.pwned") is None
    await pages.screenshot(page)


async def test_follow_box_checks_what_is_pasted_and_invite_links(alice: Node, pages: Pages) -> None:
    page = await pages.open(alice)
    mine = share_line(alice)
    await expect(page.locator("#share-line")).to_have_value(mine)
    await expect(page.locator("#invite-link")).to_have_value(f"{alice.url}/?follow={mine}")
    for pasted, says in [("hello", "not a share line"), (mine, "that is you")]:
        await page.locator("#follow-line").fill(pasted)
        await page.get_by_role("button", name="follow", exact=True).click()
        await expect(page.locator("#follow-error")).to_contain_text(says)
    # Opening one's own invite link explains it; a friend's fills the follow box.
    await page.goto(f"{alice.url}/?follow={mine}")
    await expect(page.locator("#invite-note")).to_be_visible()
    friend = f"{'b' * 56}@127.0.0.1:9"
    await page.goto(f"{alice.url}/?follow={friend}")
    await expect(page.locator("#follow-line")).to_have_value(friend)
    await expect(page.locator("#invite-note")).to_be_hidden()
    await pages.screenshot(page)


async def test_public_by_default_friends_only_on_request_and_what_a_visitor_sees(
    alice: Node, pages: Pages
) -> None:
    page = await pages.open(alice)
    await set_profile(page, "Alice", "public person")
    public = await write_post(page, "for everyone")
    await expect(public).to_have_count(1, timeout=LIVE)
    await page.locator("#friends-only").check()
    secret = await write_post(page, "for friends only")
    await expect(secret.locator(":scope > .meta .badge")).to_have_text("only you", timeout=LIVE)
    await expect(public.locator(":scope > .meta .badge")).to_be_hidden()
    async with alice.client() as http:
        rules = (await http.get("/_acl", headers={"Accept": "application/json"})).json()
    for path in ("/profile", "/posts/", "/likes/"):
        assert rules[path] == {"read": "public"}
    (secret_rule,) = [path for path, rule in rules.items() if rule == {"read": []}]
    assert secret_rule.startswith("/posts/")

    visitor = await pages.open(alice, login=False)
    await expect(visitor.locator("#login-hint")).to_be_visible(timeout=LIVE)
    await expect(visitor.locator("#visitor-name")).to_have_text("Alice", timeout=LIVE)
    await expect(post_with(visitor, "for everyone")).to_have_count(1, timeout=LIVE)
    await expect(post_with(visitor, "for friends only")).to_have_count(0)
    await expect(visitor.locator("#compose")).to_be_hidden()
    await expect(visitor.locator("#profile")).to_be_hidden()
    await pages.screenshot(visitor, "visitor")
    await pages.screenshot(page, "owner")


async def test_two_nodes_follow_reply_and_like_live(
    node_factory: NodeFactory, pages: Pages
) -> None:
    a = await node_factory("a", app=APP)
    b = await node_factory("b", app=APP)
    page_a = await pages.open(a)
    await set_profile(page_a, "Alice", "first of her name")
    post_a = await write_post(page_a, "Alice's news, for whoever follows")
    await expect(post_a).to_have_count(1, timeout=LIVE)

    page_b = await pages.open(b)
    await set_profile(page_b, "Bob", "follows Alice")
    await page_b.evaluate("() => { window.noReload = true; }")
    await page_b.locator("#follow-line").fill(await page_a.locator("#share-line").input_value())
    await page_b.get_by_role("button", name="follow", exact=True).click()
    await expect(page_b.locator("#follow-error")).to_have_text("")
    await expect(page_b.locator("#following")).to_contain_text("Alice", timeout=LIVE)
    on_b = post_with(page_b, "Alice's news")
    await expect(on_b.locator(":scope > .meta .name")).to_have_text("Alice", timeout=LIVE)
    assert await page_b.evaluate("() => window.noReload") is True

    await page_a.evaluate("() => { window.noReload = true; }")
    await reply_to(on_b, "Bob says hi")
    await on_b.locator(":scope > .actions .like").click()
    await expect(on_b.locator(":scope > .actions .count")).to_have_text("1", timeout=LIVE)
    await pages.screenshot(page_b, "b")

    await expect(post_a.locator(".replies .text")).to_have_text("Bob says hi", timeout=LIVE)
    await expect(post_a.locator(".replies .name")).to_have_text("Bob")
    await expect(post_a.locator(":scope > .actions .count")).to_have_text("1", timeout=LIVE)
    assert await page_a.evaluate("() => window.noReload") is True
    await pages.screenshot(page_a, "a")

    # Unfollow: Alice's posts leave Bob's timeline (Bob's reply keeps the thread there).
    await page_b.locator("#following li", has_text="Alice").get_by_role("button").click()
    await expect(page_b.locator("#following li")).to_have_count(0, timeout=LIVE)
    async with b.client() as http:
        following = await http.get("/following", headers={"Accept": "application/json"})
    assert following.json() == {}
