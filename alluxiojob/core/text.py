"""Text that UTF-8, and so JSON, logs and terminals, can always carry. Pure."""

from __future__ import annotations


def printable(text: str) -> str:
    """``text`` with every lone surrogate shown escaped, everything else unchanged.

    A file name that is not UTF-8 reaches us with its odd bytes as the surrogates
    U+DC80..U+DCFF (``os.fsdecode``); each is shown as the byte it stands for (``\\xff``).
    Any other lone surrogate (from a JSON ``\\ud800``) is shown as its code (``\\ud800``).
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        pass
    else:
        return text
    out = []
    for char in text:
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)
