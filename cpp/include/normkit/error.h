// Typed errors of the core. The bindings map TypeError -> Python TypeError and ValueError -> Python
// ValueError; every message names the argument, what was expected and what was given.
#pragma once
#include <charconv>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace normkit {

struct TypeError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct ValueError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// A failure of the device runtime (CUDA error codes), not of the caller's input.
struct RuntimeError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Messages are built with plain string appends, not iostreams: an ostringstream formats numbers
// through the global C++ locale (a user's std::locale::global can put "1.024" into a shape), and the
// H100 machine's build (gcc 13, nvcc 13) crashed in it: every typed error was a segfault inside
// ostream's integer insertion, which gdb found in the extension itself, not in libstdc++.so. to_chars
// gives the text ostream's defaults gave, in any locale.
// Types of the core add their own append_text overload (found by argument-dependent lookup).
inline void append_text(std::string& s, const char* v) { s += v; }
inline void append_text(std::string& s, const std::string& v) { s += v; }
inline void append_text(std::string& s, char v) { s += v; }
inline void append_text(std::string& s, bool v) { s += v ? '1' : '0'; }
template <class T,
          std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, char> && !std::is_same_v<T, bool>, int> = 0>
void append_text(std::string& s, T v) {
  char buf[24];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  s.append(buf, r.ptr);
}
template <class T, std::enable_if_t<std::is_floating_point_v<T>, int> = 0>
void append_text(std::string& s, T v) {
  char buf[32];  // "%g" (6 significant digits), whatever LC_NUMERIC says the decimal point is
  const auto r = std::to_chars(buf, buf + sizeof buf, static_cast<double>(v), std::chars_format::general, 6);
  s.append(buf, r.ptr);
}

template <class... Args>
std::string concat(const Args&... args) {
  std::string s;
  (append_text(s, args), ...);
  return s;
}

// "[2, 3, 4]" in a message. Shapes appear in many messages, and the checks run on every call: the
// text is built only when a check fails (formatting it eagerly cost ~5 us per op). Holds a reference,
// so use it within the expression that builds the message.
struct ShapeText {
  const std::vector<int64_t>& shape;
};
inline ShapeText shape_str(const std::vector<int64_t>& shape) { return {shape}; }
inline void append_text(std::string& s, const ShapeText& t) {
  s += '[';
  for (size_t i = 0; i < t.shape.size(); ++i) {
    if (i) s += ", ";
    append_text(s, t.shape[i]);
  }
  s += ']';
}

template <class... Args>
void check_value(bool ok, const Args&... message) {
  if (!ok) throw ValueError(concat(message...));
}
template <class... Args>
void check_type(bool ok, const Args&... message) {
  if (!ok) throw TypeError(concat(message...));
}

}  // namespace normkit
