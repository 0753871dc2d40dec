#include <catch2/catch.hpp>

#include "launcher/placement.hpp"

using oshpc::launcher::share_slots;
using oshpc::topo::Slot;

namespace {

std::vector<Slot> slots(int n) {
  std::vector<Slot> result;
  for (int i = 0; i < n; ++i) {
    Slot slot;
    slot.id = i;
    slot.cpus = {i};
    result.push_back(slot);
  }
  return result;
}

std::vector<int> ids(const std::vector<Slot>& share) {
  std::vector<int> result;
  for (const auto& slot : share) result.push_back(slot.id);
  return result;
}

}  // namespace

TEST_CASE("a rank alone on its node takes every slot") {
  CHECK(ids(share_slots(slots(4), 0, 1, std::nullopt)) == std::vector<int>{0, 1, 2, 3});
}

TEST_CASE("ranks sharing a node take interleaved slots, so each spans the packages") {
  CHECK(ids(share_slots(slots(7), 0, 2, std::nullopt)) == std::vector<int>{0, 2, 4, 6});
  CHECK(ids(share_slots(slots(7), 1, 2, std::nullopt)) == std::vector<int>{1, 3, 5});
}

TEST_CASE("more ranks than slots share slots, one each") {
  CHECK(ids(share_slots(slots(2), 3, 4, std::nullopt)) == std::vector<int>{1});
}

TEST_CASE("--slots repeats the rank's share round-robin") {
  CHECK(ids(share_slots(slots(2), 0, 1, 5)) == std::vector<int>{0, 1, 0, 1, 0});
}
