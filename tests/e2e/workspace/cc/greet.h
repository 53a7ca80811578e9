#ifndef REAPI_E2E_GREET_H_
#define REAPI_E2E_GREET_H_

#include <string>

// A greeting for `name`; kept in a library so the cache holds a compile, an
// archive and two links that depend on it.
std::string Greet(const std::string& name);

#endif  // REAPI_E2E_GREET_H_
