// tests/unit/json_test.cpp — support/json.h: values, errors with offsets, the nesting
// limit, repeated keys kept, integers exact. (Hostile bytes: tests/fuzz/adapter_fuzz.)
#include <gtest/gtest.h>

#include <string>

#include "support/json.h"

namespace kiln {
namespace {

TEST(Json, ParsesEveryKind) {
  auto j = Json::parse(R"( {"a": [1, -2, 3.5, 1e3, true, false, null], "s": "x\"\\\/\n\u00e9\ud83d\ude00",
                           "o": {"k": {}}, "e": []} )");
  ASSERT_TRUE(j.ok()) << j.error().message;
  const Json* a = j->get("a");
  ASSERT_TRUE(a && a->as_array());
  const auto& v = *a->as_array();
  ASSERT_EQ(v.size(), 7u);
  EXPECT_EQ(v[0].as_int(), 1);
  EXPECT_EQ(v[1].as_int(), -2);
  EXPECT_EQ(v[2].as_int(), std::nullopt);
  EXPECT_DOUBLE_EQ(*v[2].as_number(), 3.5);
  EXPECT_EQ(v[3].as_int(), 1000);  // a float with an integer value
  EXPECT_EQ(v[4].as_bool(), true);
  EXPECT_EQ(v[5].as_bool(), false);
  EXPECT_TRUE(v[6].is_null());
  EXPECT_EQ(*j->get("s")->as_string(), "x\"\\/\n\xc3\xa9\xf0\x9f\x98\x80");
  EXPECT_TRUE(j->get("o")->get("k")->as_object()->empty());
  EXPECT_TRUE(j->get("e")->as_array()->empty());
  EXPECT_EQ(j->get("missing"), nullptr);
}

TEST(Json, IntegersStayExact) {
  auto j = Json::parse("[9007199254740993, 18446744073709551615, -9223372036854775808, 18446744073709551616, -1]");
  ASSERT_TRUE(j.ok());
  const auto& v = *j->as_array();
  EXPECT_EQ(v[0].as_int(), 9007199254740993);  // above 2^53: a double would round it
  EXPECT_EQ(v[1].as_u64(), 18446744073709551615ull);
  EXPECT_EQ(v[1].as_int(), std::nullopt);
  EXPECT_EQ(v[2].as_int(), INT64_MIN);
  EXPECT_EQ(v[3].as_u64(), std::nullopt);
  EXPECT_EQ(v[4].as_u64(), std::nullopt);
}

TEST(Json, KeepsRepeatedKeysInOrder) {
  auto j = Json::parse(R"({"a": 1, "b": 2, "a": 3})");
  ASSERT_TRUE(j.ok());
  ASSERT_EQ(j->as_object()->size(), 3u);
  EXPECT_EQ(j->get("a")->as_int(), 1);  // the first
  EXPECT_EQ((*j->as_object())[2].first, "a");
}

TEST(Json, ErrorsSayWhatAndWhere) {
  struct Case { const char* text; const char* what; };
  for (auto c : {Case{"", "unexpected end"}, Case{"{", "expected a string key"}, Case{"[1,]", "unexpected character ']'"},
                 Case{"[1 2]", "expected ',' or ']'"}, Case{"{\"a\" 1}", "expected ':'"}, Case{"01", "may not start with 0"},
                 Case{"1.", "digits after '.'"}, Case{"1e", "exponent"}, Case{"\"abc", "unterminated string"},
                 Case{"\"\\x\"", "bad escape"}, Case{"\"\\ud800\"", "unpaired surrogate"}, Case{"\"a\nb\"", "control character"},
                 Case{"[1] x", "after the JSON value"}, Case{"tru", "unexpected character 't'"}, Case{"-", "needs digits"}}) {
    auto j = Json::parse(c.text);
    ASSERT_FALSE(j.ok()) << c.text;
    EXPECT_NE(j.error().message.find(c.what), std::string::npos) << c.text << " -> " << j.error().message;
    EXPECT_NE(j.error().message.find("at byte"), std::string::npos);
  }
}

TEST(Json, NestingIsLimitedWithoutRecursion) {
  std::string deep(100000, '[');
  auto j = Json::parse(deep, 64);
  ASSERT_FALSE(j.ok());
  EXPECT_NE(j.error().message.find("nested deeper than 64"), std::string::npos);
  std::string ok = std::string(64, '[') + std::string(64, ']');
  EXPECT_TRUE(Json::parse(ok, 64).ok());
  EXPECT_FALSE(Json::parse("[" + ok + "]", 64).ok());
}

}  // namespace
}  // namespace kiln
