#pragma once
// A minimal PNG writer for the examples (8-bit RGB, no compression: zlib "stored" blocks), so
// the pictures need no image library. Not part of the nflow library.
#include <array>
#include <cstdint>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace nflow_examples {

struct Image {
  int width = 0, height = 0;
  std::vector<std::uint8_t> rgb;  // row-major, 3 bytes per pixel
  Image(int w, int h) : width(w), height(h), rgb(std::size_t(w) * std::size_t(h) * 3, 255) {}
  void set(int x, int y, std::array<std::uint8_t, 3> c) {
    if (x < 0 || y < 0 || x >= width || y >= height) return;
    const std::size_t i = (std::size_t(y) * std::size_t(width) + std::size_t(x)) * 3;
    rgb[i] = c[0];
    rgb[i + 1] = c[1];
    rgb[i + 2] = c[2];
  }
  std::array<std::uint8_t, 3> get(int x, int y) const {
    const std::size_t i = (std::size_t(y) * std::size_t(width) + std::size_t(x)) * 3;
    return {rgb[i], rgb[i + 1], rgb[i + 2]};
  }
};

namespace detail {
inline std::uint32_t crc32(const std::uint8_t* data, std::size_t n, std::uint32_t crc = 0) {
  crc = ~crc;
  for (std::size_t i = 0; i < n; ++i) {
    crc ^= data[i];
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}
inline void put32(std::vector<std::uint8_t>& v, std::uint32_t x) {
  for (int s = 24; s >= 0; s -= 8) v.push_back(std::uint8_t(x >> s));
}
inline void chunk(std::ofstream& out, const char* type, const std::vector<std::uint8_t>& data) {
  std::vector<std::uint8_t> buf;
  put32(buf, std::uint32_t(data.size()));
  buf.insert(buf.end(), type, type + 4);
  buf.insert(buf.end(), data.begin(), data.end());
  std::vector<std::uint8_t> tail;
  put32(tail, crc32(buf.data() + 4, buf.size() - 4));
  out.write(reinterpret_cast<const char*>(buf.data()), std::streamsize(buf.size()));
  out.write(reinterpret_cast<const char*>(tail.data()), 4);
}
}  // namespace detail

/// Writes `img` as a PNG file; throws std::runtime_error if the file cannot be written.
inline void write_png(const std::string& path, const Image& img) {
  std::vector<std::uint8_t> raw;  // filter byte 0 + row
  for (int y = 0; y < img.height; ++y) {
    raw.push_back(0);
    const auto* row = img.rgb.data() + std::size_t(y) * std::size_t(img.width) * 3;
    raw.insert(raw.end(), row, row + std::size_t(img.width) * 3);
  }
  std::vector<std::uint8_t> z{0x78, 0x01};
  std::uint32_t a = 1, b = 0;
  for (std::uint8_t c : raw) {
    a = (a + c) % 65521u;
    b = (b + a) % 65521u;
  }
  for (std::size_t pos = 0; pos < raw.size() || pos == 0;) {
    const std::size_t len = std::min<std::size_t>(65535, raw.size() - pos);
    const bool last = pos + len >= raw.size();
    z.push_back(last ? 1 : 0);
    z.push_back(std::uint8_t(len & 0xff));
    z.push_back(std::uint8_t(len >> 8));
    z.push_back(std::uint8_t(~len & 0xff));
    z.push_back(std::uint8_t((~len >> 8) & 0xff));
    z.insert(z.end(), raw.begin() + std::ptrdiff_t(pos), raw.begin() + std::ptrdiff_t(pos + len));
    pos += len;
    if (last) break;
  }
  detail::put32(z, (b << 16) | a);
  std::ofstream out(path, std::ios::binary);
  if (!out) throw std::runtime_error("cannot write " + path);
  const std::uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  out.write(reinterpret_cast<const char*>(sig), 8);
  std::vector<std::uint8_t> ihdr;
  detail::put32(ihdr, std::uint32_t(img.width));
  detail::put32(ihdr, std::uint32_t(img.height));
  ihdr.insert(ihdr.end(), {8, 2, 0, 0, 0});
  detail::chunk(out, "IHDR", ihdr);
  detail::chunk(out, "IDAT", z);
  detail::chunk(out, "IEND", {});
  if (!out) throw std::runtime_error("cannot write " + path);
}

/// A perceptually ordered colour map (dark blue → teal → yellow) for t in [0, 1].
inline std::array<std::uint8_t, 3> colormap(double t) {
  t = t < 0 ? 0 : (t > 1 ? 1 : t);
  static const double stops[5][3] = {
      {68, 1, 84}, {59, 82, 139}, {33, 145, 140}, {94, 201, 98}, {253, 231, 37}};
  const double s = t * 4.0;
  const int i = s >= 4.0 ? 3 : int(s);
  const double f = s - i;
  std::array<std::uint8_t, 3> c{};
  for (int k = 0; k < 3; ++k)
    c[std::size_t(k)] = std::uint8_t(stops[i][k] + f * (stops[i + 1][k] - stops[i][k]) + 0.5);
  return c;
}

}  // namespace nflow_examples
