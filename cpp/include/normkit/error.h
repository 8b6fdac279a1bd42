// Typed errors of the core. The bindings map TypeError -> Python TypeError and ValueError -> Python
// ValueError; every message names the argument, what was expected and what was given.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>
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

namespace detail {
inline void append(std::ostringstream&) {}
template <class T, class... Rest>
void append(std::ostringstream& os, const T& first, const Rest&... rest) {
  os << first;
  append(os, rest...);
}
}  // namespace detail

template <class... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  detail::append(os, args...);
  return os.str();
}

// "[2, 3, 4]" when streamed into a message. Shapes appear in many messages, and the checks run on
// every call: the text is built only when a check fails (formatting it eagerly cost ~5 us per op).
// Holds a reference, so use it within the expression that builds the message.
struct ShapeText {
  const std::vector<int64_t>& shape;
};
inline ShapeText shape_str(const std::vector<int64_t>& shape) { return {shape}; }
inline std::ostream& operator<<(std::ostream& os, const ShapeText& t) {
  os << '[';
  for (size_t i = 0; i < t.shape.size(); ++i) os << (i ? ", " : "") << t.shape[i];
  return os << ']';
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
