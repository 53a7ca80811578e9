#include <iostream>

#include "cc/greet.h"

int main() {
  const std::string got = Greet("bazel");
  if (got != "hello, bazel!") {
    std::cerr << "Greet(\"bazel\") = \"" << got << "\"" << std::endl;
    return 1;
  }
  std::cout << "greet_test passed" << std::endl;
  return 0;
}
