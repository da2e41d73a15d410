#!/usr/bin/env python3
"""Fails when a function in src/ or tools/ is longer than the limit (150 lines).

A function's length is counted from the line of its opening brace to the line of its closing brace,
both included. Functions are the brace blocks at namespace scope (or directly inside a struct or
class body) that are not themselves namespaces, types, initialisers or extern "C" blocks; lambdas
and nested blocks count toward the function that holds them. Comments, string and character
literals are skipped, so braces inside them do not count.

Usage: check_function_length.py [--limit N] [--self-test] [ROOT]   (ROOT: the repository)
"""
import argparse
import os
import re
import sys

LIMIT = 150

# Files whose long functions are tolerated (none: every function in src/ and tools/ is within the
# limit). Kept so that a file under an announced rewrite can be listed here, visibly.
ALLOWLIST_PREFIXES = ()

SOURCE_DIRS = ("src", "tools")
EXTENSIONS = (".cpp", ".h")


def strip_code(text):
    """Returns text with comments, string and char literals replaced by spaces (newlines kept)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "R" and text.startswith('R"', i) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'R"([^(\s]*)\(', text[i:])
            if not m:
                out.append(c)
                i += 1
                continue
            end = ")" + m.group(1) + '"'
            j = text.find(end, i + m.end())
            j = n if j < 0 else j + len(end)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c in "\"'":
            if c == "'" and i > 0 and text[i - 1].isalnum():  # digit separator: 1'000'000
                out.append(" ")
                i += 1
                continue
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            j = min(j + 1, n)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def functions(text):
    """Yields (name, first_line, last_line) of each function definition in the C++ source text."""
    code = strip_code(text)
    line = 1
    # Each open scope: (kind, start_line, name); kind "scope" = namespace/type/extern (transparent),
    # "func" = a function body, "other" = an initialiser or a block inside a function.
    stack = []
    stmt_start = 0  # index where the current declaration text begins
    for i, c in enumerate(code):
        if c == "\n":
            line += 1
        elif c == "{":
            in_func = any(k == "func" or k == "other" for k, _, _ in stack)
            if in_func:
                stack.append(("other", line, ""))
            else:
                head = code[stmt_start:i]
                head_s = " ".join(head.split())
                kind, name = classify(head_s)
                stack.append((kind, line, name))
            stmt_start = i + 1
        elif c == "}":
            if stack:
                kind, start, name = stack.pop()
                if kind == "func":
                    yield name, start, line
            stmt_start = i + 1
        elif c == ";" and not any(k in ("func", "other") for k, _, _ in stack):
            stmt_start = i + 1
        elif c in ":" and not stack:
            pass


def classify(head):
    """Says whether the text before a '{' at namespace/type scope opens a function."""
    h = re.sub(r"^\s*(#[^\n]*)", "", head).strip()
    # Drop access specifiers and preprocessor lines left at the start.
    h = re.sub(r"^(public|private|protected)\s*:\s*", "", h)
    if re.match(r"^(template\s*<.*>\s*)?(namespace\b|struct\b|class\b|union\b|enum\b)", h) or h == "":
        return "scope", ""
    if h.startswith('extern "') or h.startswith("extern  "):
        return "scope", ""
    if re.search(r"\bnamespace\s*\w*\s*$", h):
        return "scope", ""
    if "(" not in h:
        return "other", ""  # an initialiser: int x[] = {...}
    if re.search(r"=\s*$", h) or re.search(r"=\s*\w*\s*$", h) and ")" not in h.split("=")[-1]:
        return "other", ""
    m = re.search(r"([~\w:]+(?:<[^()]*>)?)\s*\(", h)
    name = m.group(1) if m else "?"
    return "func", name


def self_test():
    """Checks the counter on small sources whose lengths are known by construction."""
    body = "\n".join("  x += %d;" % k for k in range(149))
    src = (
        "namespace moe {\nnamespace {\n"
        "struct S { int a = 1; };\n"
        "const char* s = \"{ not a brace\";  // {\n"
        "int v[] = {1, 2};\n"
        "}  // namespace\n"
        "int f150(int x) {\n" + body + "\n}\n"            # { + 149 + } = 151 lines
        "int g(int x) const {\n  auto l = [](int y) { return y; };\n  /* } */ return l(x);\n}\n"
        "}  // namespace moe\n")
    got = [(name, b - a + 1) for name, a, b in functions(src)]
    want = [("f150", 151), ("g", 4)]
    if got != want:
        print(f"self-test failed: got {got}, want {want}", file=sys.stderr)
        return 1
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("root", nargs="?", default=os.path.join(os.path.dirname(__file__), ".."))
    ap.add_argument("--limit", type=int, default=LIMIT)
    ap.add_argument("--self-test", action="store_true", help="check the counter itself and exit")
    args = ap.parse_args()
    if args.self_test:
        return self_test()
    root = os.path.abspath(args.root)
    bad, allowed = [], []
    n_funcs = 0
    for d in SOURCE_DIRS:
        for dirpath, _, files in os.walk(os.path.join(root, d)):
            for f in sorted(files):
                if not f.endswith(EXTENSIONS):
                    continue
                path = os.path.join(dirpath, f)
                rel = os.path.relpath(path, root).replace(os.sep, "/")
                with open(path, encoding="utf-8", errors="replace") as fh:
                    text = fh.read()
                for name, a, b in functions(text):
                    n_funcs += 1
                    length = b - a + 1
                    if length <= args.limit:
                        continue
                    entry = f"{rel}:{a}: {name} is {length} lines (limit {args.limit})"
                    (allowed if rel.startswith(ALLOWLIST_PREFIXES) else bad).append(entry)
    for e in allowed:  # shown, so that the allowlist shrinks as the rewrites land
        print("allowlisted (being rewritten): " + e)
    for e in bad:
        print(e)
    if n_funcs == 0:
        print(f"check_function_length: no functions found under {root}", file=sys.stderr)
        return 1
    if bad:
        print(f"{len(bad)} function(s) over {args.limit} lines; split them into their phases",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
