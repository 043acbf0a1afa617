"""How text from people is compared: prompts for duplicates (`normalise`), user ids for the per-user cap and the
split (`user_key`), passwords without what shows nothing (`strip_invisible`). Shared by the prompt intake, the labeling
app and the datasets' split by user, so that all three see one user where the intake does."""

from __future__ import annotations

import re
import unicodedata

_WS = re.compile(r"\s+")
# Code points that show nothing: Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt; variation
# selectors, the combining grapheme joiner, Hangul fillers, ...) and the Braille blank. Category Cf alone
# missed U+034F, U+FE0F, U+3164 and U+2800, and each respelled user id got a cap of its own (issue 23).
_INVISIBLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f"
    "\u2800\u3164\ufe00-\ufe0f\ufeff\uffa0\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0000-\U000e0fff]"
)
# Letters that look like a Latin one (after case folding), from Unicode's confusables.txt: Cyrillic, Greek,
# small capitals, IPA. Only non-ASCII ones: ASCII ids such as 'user1' and 'userl' stay two users.
_LATIN_LOOK_ALIKES = str.maketrans(
    {
        **dict.fromkeys("аɑαᴀ", "a"), **dict.fromkeys("ʙ", "b"), **dict.fromkeys("сᴄϲ", "c"),
        **dict.fromkeys("ԁᴅ", "d"), **dict.fromkeys("еᴇ", "e"), **dict.fromkeys("ɡɢ", "g"),
        **dict.fromkeys("һʜ", "h"), **dict.fromkeys("іıɪι", "i"), **dict.fromkeys("јᴊ", "j"),
        **dict.fromkeys("кᴋκ", "k"), **dict.fromkeys("ӏʟ", "l"), **dict.fromkeys("ᴍ", "m"),
        **dict.fromkeys("ɴ", "n"), **dict.fromkeys("оᴏοσ", "o"), **dict.fromkeys("рᴘρ", "p"),
        **dict.fromkeys("ԛ", "q"), **dict.fromkeys("ʀ", "r"), **dict.fromkeys("ѕꜱ", "s"),
        **dict.fromkeys("ᴛτ", "t"), **dict.fromkeys("ᴜ", "u"), **dict.fromkeys("ᴠ", "v"),
        **dict.fromkeys("ԝᴡ", "w"), **dict.fromkeys("хχ", "x"), **dict.fromkeys("уүʏγ", "y"),
        **dict.fromkeys("ᴢ", "z"),
    }
)  # fmt: skip
# Capitals that case folding would turn into letters that look like no Latin one (Greek Ν -> ν).
_LATIN_CAPITAL_LOOK_ALIKES = str.maketrans(
    dict(zip("ΑΒΕΖΗΙΚΜΝΟΡΤΥΧАВЕКМНОРСТХ", "ABEZHIKMNOPTYXABEKMHOPCTX", strict=True))
)


def normalise(text: str) -> str:
    """The form in which prompts are compared for duplicates: invisible code points (category Cf: zero-width
    spaces, joiners, bidi marks, soft hyphens; and `_INVISIBLE`) dropped, look-alikes folded (NFKC:
    full-width letters, ligatures, NBSP), whitespace runs collapsed, trimmed, case-folded."""
    return _WS.sub(" ", strip_invisible(text)).strip().casefold()


def strip_invisible(text: str) -> str:
    """`text` in NFKC form without the code points that show nothing (category Cf and `_INVISIBLE`)."""
    if text.isascii():  # ASCII has no format characters and is its own NFKC form
        return text
    text = "".join(c for c in _INVISIBLE.sub("", text) if unicodedata.category(c) != "Cf")
    return _INVISIBLE.sub("", unicodedata.normalize("NFKC", text))  # NFKC can make a filler


def user_key(user_id: str) -> str:
    """The form in which user ids are compared, for the per-user cap and the split (here and wherever
    user ids are grouped): `normalise`, then accents and other combining marks dropped and non-Latin
    look-alikes of Latin letters mapped to them (a confusable skeleton, for the common cases)."""
    if user_id.isascii():
        return normalise(user_id)
    key = normalise(unicodedata.normalize("NFKC", user_id).translate(_LATIN_CAPITAL_LOOK_ALIKES))
    key = "".join(c for c in unicodedata.normalize("NFD", key) if not unicodedata.category(c).startswith("M"))
    return unicodedata.normalize("NFC", key.translate(_LATIN_LOOK_ALIKES))
