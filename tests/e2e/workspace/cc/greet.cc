#include "cc/greet.h"

std::string Greet(const std::string& name) { return "hello, " + name + "!"; }
