-- The S3 side of alluxiojob.testing.s3_nginx: ListObjects (v2 and v1), HEAD bucket,
-- S3 error bodies and the latency setting. nginx itself serves GET and HEAD of objects
-- (files under the root) with their ETag, Last-Modified, ranges, 206 and 416.
--
-- At start-up (init_by_lua, in the master, so the workers share it after fork) it loads
-- one index file per bucket, index/<bucket>.tsv: a line per object, "key<TAB>size<TAB>
-- mtime" in byte order of the key, written by the Python side before nginx starts. A
-- listing is a binary search for its first key and a walk from there; a common prefix
-- is skipped with one more binary search, so a page costs O(page * log n) whatever the
-- bucket size.

local _M = {}

local buckets = {}  -- name -> {keys = {...}, sizes = {...}, mtimes = {...}, n = count}
local config        -- ngx.shared dict: "latency" in seconds

local XMLNS = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'
local MAX_KEYS = 1000

function _M.init(prefix, names)
    for _, name in ipairs(names) do
        local keys, sizes, mtimes, n = {}, {}, {}, 0
        for line in io.lines(prefix .. "index/" .. name .. ".tsv") do
            local key, size, mtime = line:match("^(.*)\t(%d+)\t(%d+)$")
            n = n + 1
            keys[n], sizes[n], mtimes[n] = key, tonumber(size), tonumber(mtime)
        end
        buckets[name] = {keys = keys, sizes = sizes, mtimes = mtimes, n = n}
    end
end

function _M.init_worker()
    config = ngx.shared.s3config
end

-- The added latency of every request (the access phase of every location).
function _M.delay()
    local seconds = config:get("latency")
    if seconds and seconds > 0 then
        ngx.sleep(seconds)
    end
end

local ENTITIES = {["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;",
                  ["'"] = "&apos;"}

local function escape(text)
    if not text:find("[&<>\"']") then
        return text  -- most keys: no copy
    end
    return (text:gsub("[&<>\"']", ENTITIES))
end

function _M.error(status, code, message)
    ngx.status = status
    ngx.header["Content-Type"] = "application/xml"
    ngx.print('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>', code,
              "</Code><Message>", escape(message), "</Message><Resource>",
              escape(ngx.var.uri), "</Resource></Error>")
    return ngx.exit(ngx.OK)
end

-- GET /_control/latency?seconds=S sets the latency; the answer is the value in force.
function _M.control()
    local seconds = ngx.var.arg_seconds
    if seconds then
        local value = tonumber(seconds)
        if not value or value < 0 or value > 10 then
            return _M.error(400, "InvalidArgument", "seconds must be 0 to 10")
        end
        config:set("latency", value)
    end
    ngx.header["Content-Type"] = "text/plain"
    ngx.say(config:get("latency") or 0)
end

-- The first index i with keys[i] >= target (n + 1 if none), searching from lo.
local function lower_bound(keys, n, target, lo)
    local hi = n + 1
    while lo < hi do
        local mid = math.floor((lo + hi) / 2)
        if keys[mid] < target then
            lo = mid + 1
        else
            hi = mid
        end
    end
    return lo
end

-- The smallest string above every string that starts with text: its last byte plus one.
local function successor(text)
    for i = #text, 1, -1 do
        local byte = text:byte(i)
        if byte < 255 then
            return text:sub(1, i - 1) .. string.char(byte + 1)
        end
    end
    return nil  -- all 0xff: nothing is above it
end

local function iso8601(mtime)
    return os.date("!%Y-%m-%dT%H:%M:%S.000Z", mtime)
end

-- A query argument as one string: nil when absent, "" for "?name", an error if repeated.
local function argument(args, name)
    local value = args[name]
    if value == nil then
        return nil
    elseif value == true then
        return ""
    elseif type(value) == "table" then
        return _M.error(400, "InvalidArgument", name .. " is given more than once")
    end
    return value
end

-- The entries of one page: keys and common prefixes above `after`, in byte order.
local function page(bucket, prefix, delimiter, after, max_keys)
    local keys, n = bucket.keys, bucket.n
    local i = lower_bound(keys, n, prefix, 1)
    if after and after >= prefix then
        -- the first key strictly above `after`
        i = lower_bound(keys, n, after .. "\0", i)
    end
    local contents, prefixes, count, last = {}, {}, 0, nil
    local plen = #prefix
    while i <= n do
        local key = keys[i]
        if plen > 0 and key:sub(1, plen) ~= prefix then
            break
        end
        local common
        if delimiter ~= "" then
            local at = key:find(delimiter, plen + 1, true)
            if at then
                common = key:sub(1, at + #delimiter - 1)
            end
        end
        if common then
            -- A common prefix holds the keys above `after` that roll up into it, even
            -- if it sorts below `after`; a continuation token that is this prefix means
            -- it was the last entry of the page before.
            if common ~= after then
                if count == max_keys then
                    return contents, prefixes, count, last, true
                end
                prefixes[#prefixes + 1] = common
                count, last = count + 1, common
            end
            local above = successor(common)
            if not above then
                break
            end
            i = lower_bound(keys, n, above, i + 1)
        else
            if count == max_keys then
                return contents, prefixes, count, last, true
            end
            contents[#contents + 1] = i
            count, last = count + 1, key
            i = i + 1
        end
    end
    return contents, prefixes, count, last, false
end

-- GET or HEAD /bucket[/]: HeadBucket, ListObjectsV2 (list-type=2) or ListObjects (v1).
function _M.bucket()
    local name = ngx.var.bucket
    local bucket = buckets[name]
    if not bucket then
        return _M.error(404, "NoSuchBucket", "The specified bucket does not exist")
    end
    local method = ngx.req.get_method()
    if method == "HEAD" and not ngx.var.args then
        return  -- HeadBucket: 200, no body
    end
    if method ~= "GET" and method ~= "HEAD" then
        return _M.error(405, "MethodNotAllowed", "this server is read-only")
    end
    local args = ngx.req.get_uri_args(64)
    local version = argument(args, "list-type")
    if version ~= nil and version ~= "2" then
        return _M.error(400, "InvalidArgument", "list-type must be 2")
    end
    local v2 = version == "2"
    local prefix = argument(args, "prefix") or ""
    local delimiter = argument(args, "delimiter") or ""
    local encoding = argument(args, "encoding-type")
    if encoding ~= nil and encoding ~= "url" then
        return _M.error(400, "InvalidArgument", "Invalid Encoding Method specified in Request")
    end
    local max_keys = MAX_KEYS
    local max_text = argument(args, "max-keys")
    if max_text ~= nil then
        max_keys = tonumber(max_text)
        if not max_keys or max_keys < 0 or max_keys ~= math.floor(max_keys) then
            return _M.error(400, "InvalidArgument", "max-keys must be a whole number >= 0")
        end
        max_keys = math.min(max_keys, MAX_KEYS)
    end
    local token, start_after, marker, after
    if v2 then
        token = argument(args, "continuation-token")
        start_after = argument(args, "start-after")
        if token ~= nil then
            after = ngx.decode_base64(token)
            if not after or after == "" then
                return _M.error(400, "InvalidArgument",
                                "The continuation token provided is incorrect")
            end
        elseif start_after ~= nil and start_after ~= "" then
            after = start_after
        end
    else
        marker = argument(args, "marker")
        if marker ~= nil and marker ~= "" then
            after = marker
        end
    end

    local contents, prefixes, count, last, truncated =
        page(bucket, prefix, delimiter, after, max_keys)

    local encode = escape
    if encoding == "url" then  -- percent-encoded as S3 does it, "/" left as it is
        encode = function(text)
            return escape((ngx.escape_uri(text):gsub("%%2[Ff]", "/")))
        end
    end
    local out, o = {}, 0
    local function add(...)
        for k = 1, select("#", ...) do
            o = o + 1
            out[o] = select(k, ...)
        end
    end
    add('<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult ', XMLNS, ">",
        "<Name>", escape(name), "</Name><Prefix>", encode(prefix), "</Prefix>")
    if v2 then
        if token ~= nil then
            add("<ContinuationToken>", escape(token), "</ContinuationToken>")
        end
        if start_after ~= nil then
            add("<StartAfter>", encode(start_after), "</StartAfter>")
        end
        add("<KeyCount>", count, "</KeyCount>")
    else
        add("<Marker>", encode(marker or ""), "</Marker>")
    end
    add("<MaxKeys>", max_keys, "</MaxKeys>")
    if delimiter ~= "" then
        add("<Delimiter>", encode(delimiter), "</Delimiter>")
    end
    if encoding then
        add("<EncodingType>url</EncodingType>")
    end
    add("<IsTruncated>", truncated and "true" or "false", "</IsTruncated>")
    if truncated then
        if v2 then
            add("<NextContinuationToken>", ngx.encode_base64(last), "</NextContinuationToken>")
        else
            add("<NextMarker>", encode(last), "</NextMarker>")
        end
    end
    local keys, sizes, mtimes = bucket.keys, bucket.sizes, bucket.mtimes
    -- A page's keys mostly share their mtime: its date is formatted once. (add() with
    -- its varargs is not compiled by LuaJIT; this loop, a page's cost, appends directly.)
    local date_of, date = nil, nil
    for _, i in ipairs(contents) do
        local size, mtime = sizes[i], mtimes[i]
        if mtime ~= date_of then
            date_of, date = mtime, iso8601(mtime)
        end
        -- nginx's own ETag of the file: "<mtime in hex>-<size in hex>".
        out[o + 1] = "<Contents><Key>"
        out[o + 2] = encode(keys[i])
        out[o + 3] = "</Key><LastModified>"
        out[o + 4] = date
        out[o + 5] = "</LastModified><ETag>&quot;"
        out[o + 6] = string.format("%x-%x", mtime, size)
        out[o + 7] = "&quot;</ETag><Size>"
        out[o + 8] = size
        out[o + 9] = "</Size><StorageClass>STANDARD</StorageClass></Contents>"
        o = o + 9
    end
    for _, common in ipairs(prefixes) do
        add("<CommonPrefixes><Prefix>", encode(common), "</Prefix></CommonPrefixes>")
    end
    add("</ListBucketResult>")
    ngx.header["Content-Type"] = "application/xml"
    ngx.print(out)
end

return _M
