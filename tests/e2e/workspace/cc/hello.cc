#include <iostream>

#include "cc/greet.h"

int main(int argc, char** argv) {
  std::cout << Greet(argc > 1 ? argv[1] : "remote cache") << std::endl;
  return 0;
}
