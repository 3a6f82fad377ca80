package encore.jvm;

import com.fasterxml.jackson.core.JsonEncoding;
import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonGenerator;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.HashMap;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.api.java.UDF1;
import org.apache.spark.sql.catalyst.json.JSONOptions;
import org.apache.spark.unsafe.types.UTF8String;

/**
 * A JSON line to a row of text fields, as Spark's from_json gives them for a schema of strings, in
 * half its time: from_json builds every value through its generic converters, this reads the named
 * fields straight off the token stream. Null means "not a JSON object" (blank, truncated, a bare
 * value), where from_json gives null or fills its corrupt-record column.
 *
 * Same reading as from_json: Spark's own JsonFactory (JSONOptions defaults: single quotes and NaN
 * allowed, comments and leading zeros not), names matched case-sensitively, the last duplicate key
 * wins, unknown fields skipped, anything after the object ignored; a string value as its text, any
 * other value as Spark's generator writes it (numbers normalised: -0 -> 0, 1E5 -> 100000.0, NaN ->
 * "NaN"; objects and arrays as compact JSON). tests/test_udfs.py compares the two line by line.
 *
 * The line comes as its UTF-8 bytes. A plain line (the usual case: one flat object of ASCII text,
 * the standard escapes, null and integers without leading zeros or "-0") is read by a byte scanner
 * that gives what Jackson gives for it; at the first thing outside that (non-ASCII bytes, floats,
 * booleans, nesting, single quotes, a syntax error...) the line goes to Jackson as the text Spark
 * would decode (invalid UTF-8 as U+FFFD). On 10M generated lines (2 cores), reading, parsing and
 * typing them took 20.1-20.8 s with the scanner against 22.6-25.4 s with Jackson alone.
 *
 * The scanner hands its values over as Spark's own strings (UTF8String, built from the bytes),
 * not as Java Strings that Spark would encode back to UTF-8 (10M lines: ~3 s less of parsing,
 * alternating runs), and copies only the fields asked for: the others are checked, so a line is
 * malformed or not whatever fields are asked for.
 *
 * With watched fields, the row gets one more text field: the watched fields whose value is an
 * object, an array or a boolean, as "name:kind" joined by commas (e.g. "user_id:array"), else null.
 * Only Jackson reads such lines (the scanner leaves them to it), so plain lines pay nothing for it.
 *
 * Compiled by Spark's own Janino (jobs/udfs.py), hence raw types and no try-with-resources.
 */
public class FlatJsonRecord implements UDF1 {
    private static JsonFactory sparkFactory;
    private static final Object NOT_READ = new Object();   // a skipped field's value (never stored)

    private final String[] names;
    private final String[] watched;
    private transient boolean[] watch;
    private transient int width;
    private transient byte[][] nameBytes;
    private transient HashMap positions;
    private transient JsonFactory factory;

    public FlatJsonRecord(String[] names) {
        this(names, new String[0]);
    }

    public FlatJsonRecord(String[] names, String[] watched) {
        this.names = names;
        this.watched = watched;
    }

    private static synchronized JsonFactory sparkFactory() {
        if (sparkFactory == null) {
            sparkFactory = new JSONOptions(scala.collection.immutable.Map$.MODULE$.empty(), "UTC", "")
                .buildJsonFactory();
        }
        return sparkFactory;
    }

    public Object call(Object input) throws Exception {
        if (input == null) return null;
        if (factory == null) {
            factory = sparkFactory();
            positions = new HashMap();
            nameBytes = new byte[names.length][];
            watch = new boolean[names.length];
            for (int i = 0; i < names.length; i++) {
                positions.put(names[i], new Integer(i));
                nameBytes[i] = names[i].getBytes(StandardCharsets.UTF_8);
                for (int w = 0; w < watched.length; w++) if (watched[w].equals(names[i])) watch[i] = true;
            }
            width = names.length + (watched.length > 0 ? 1 : 0);
        }
        if (input instanceof byte[]) {
            byte[] bytes = (byte[]) input;
            Object[] plain = scanPlain(bytes);
            if (plain != null) return RowFactory.create(plain);
            return parse(new String(bytes, StandardCharsets.UTF_8));
        }
        return parse((String) input);
    }

    /** Jackson's reading of one line of text. */
    private Object parse(String input) throws IOException {
        Object[] out = new Object[width];
        String[] kinds = new String[names.length];
        JsonParser parser = null;
        try {
            parser = factory.createParser((String) input);
            if (parser.nextToken() != JsonToken.START_OBJECT) return null;
            JsonToken token;
            while ((token = parser.nextToken()) == JsonToken.FIELD_NAME) {
                Integer at = (Integer) positions.get(parser.getCurrentName());
                JsonToken value = parser.nextToken();
                if (at == null) {
                    parser.skipChildren();
                } else {
                    kinds[at.intValue()] = watch[at.intValue()] ? kind(value) : null;
                    out[at.intValue()] = text(parser, value);
                }
            }
            if (token != JsonToken.END_OBJECT) return null;
        } catch (IOException malformed) {
            return null;
        } catch (RuntimeException malformed) {
            return null;
        } finally {
            if (parser != null) parser.close();
        }
        if (width > names.length) {
            StringBuilder marked = new StringBuilder();
            for (int f = 0; f < names.length; f++) {
                if (kinds[f] == null) continue;
                if (marked.length() > 0) marked.append(',');
                marked.append(names[f]).append(':').append(kinds[f]);
            }
            if (marked.length() > 0) out[names.length] = marked.toString();
        }
        return RowFactory.create(out);
    }

    // The JSON kind of a value that is not text: what a watched field must not be (null otherwise).
    private static String kind(JsonToken value) {
        if (value == JsonToken.START_OBJECT) return "object";
        if (value == JsonToken.START_ARRAY) return "array";
        if (value == JsonToken.VALUE_TRUE || value == JsonToken.VALUE_FALSE) return "boolean";
        return null;
    }

    // Fields of a plain line; null when the line is not plain (then Jackson reads it).
    private Object[] scanPlain(byte[] b) {
        int n = b.length;
        if (n == 0 || n > 40000 || b[0] != '{') return null;   // Jackson's name-length limit is 50,000
        Object[] out = new Object[width];
        int i = skipSpace(b, 1);
        if (i < n && b[i] == '}') return out;
        while (true) {
            if (i >= n || b[i] != '"') return null;
            int nameStart = i + 1;
            int nameEnd = nameStart;
            while (nameEnd < n && b[nameEnd] != '"') {
                int c = b[nameEnd] & 0xff;
                if (c == '\\' || c < 0x20 || c >= 0x80) return null;
                nameEnd++;
            }
            if (nameEnd >= n) return null;
            int at = fieldAt(b, nameStart, nameEnd - nameStart);
            i = skipSpace(b, nameEnd + 1);
            if (i >= n || b[i] != ':') return null;
            i = skipSpace(b, i + 1);
            if (i >= n) return null;
            int c = b[i] & 0xff;
            int end;
            Object value;
            if (c == '"') {
                end = stringEnd(b, i + 1);
                if (end < 0) return null;
                // A field nobody asked for is only checked (its escapes), not copied.
                value = at >= 0 || hasEscape(b, i + 1, end) ? stringValue(b, i + 1, end) : NOT_READ;
                if (value == null) return null;
                end++;
            } else if (c == '-' || (c >= '0' && c <= '9')) {
                end = i + (c == '-' ? 1 : 0);
                int digits = end;
                while (end < n && b[end] >= '0' && b[end] <= '9') end++;
                int count = end - digits;
                // No leading zero, no "-0", at most 18 digits: Jackson's long, printed, is this text.
                if (count == 0 || count > 18 || (b[digits] == '0' && (count > 1 || c == '-'))) return null;
                if (end < n && !isDelimiter(b[end])) return null;
                value = at >= 0 ? utf8(b, i, end) : NOT_READ;
            } else if (c == 'n' && i + 4 <= n && b[i + 1] == 'u' && b[i + 2] == 'l' && b[i + 3] == 'l'
                       && (i + 4 == n || isDelimiter(b[i + 4]))) {
                end = i + 4;
                value = null;
            } else {
                return null;
            }
            if (at >= 0) out[at] = value;   // the last of duplicate keys wins, as in Jackson's reading
            i = skipSpace(b, end);
            if (i >= n) return null;
            if (b[i] == '}') return out;    // what follows the object is ignored, as by Jackson's reading
            if (b[i] != ',') return null;
            i = skipSpace(b, i + 1);
        }
    }

    private int fieldAt(byte[] b, int start, int length) {
        for (int f = 0; f < nameBytes.length; f++) {
            byte[] name = nameBytes[f];
            if (name.length != length) continue;
            int k = 0;
            while (k < length && name[k] == b[start + k]) k++;
            if (k == length) return f;
        }
        return -1;
    }

    private static boolean hasEscape(byte[] b, int start, int end) {
        for (int i = start; i < end; i++) if (b[i] == '\\') return true;
        return false;
    }

    private static int skipSpace(byte[] b, int i) {
        while (i < b.length && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r')) i++;
        return i;
    }

    private static boolean isDelimiter(byte c) {
        return c == ',' || c == '}' || c == ' ' || c == '\t' || c == '\n' || c == '\r';
    }

    // The closing quote of a string starting at i, or -1 when the string is not plain ASCII.
    private static int stringEnd(byte[] b, int i) {
        while (i < b.length) {
            int c = b[i] & 0xff;
            if (c == '"') return i;
            if (c < 0x20 || c >= 0x80) return -1;
            i += c == '\\' ? 2 : 1;
        }
        return -1;
    }

    // The text of b[start, end): the standard JSON escapes decoded as Jackson decodes them (a lone
    // surrogate stays one char); null for any other escape.
    private static UTF8String stringValue(byte[] b, int start, int end) {
        int i = start;
        while (i < end && b[i] != '\\') i++;
        if (i == end) return utf8(b, start, end);
        StringBuilder text = new StringBuilder(end - start);
        for (int k = start; k < i; k++) text.append((char) b[k]);
        while (i < end) {
            byte c = b[i];
            if (c != '\\') {
                text.append((char) c);
                i++;
                continue;
            }
            if (i + 1 >= end) return null;
            byte e = b[i + 1];
            i += 2;
            if (e == '"' || e == '\\' || e == '/') text.append((char) e);
            else if (e == 'n') text.append('\n');
            else if (e == 't') text.append('\t');
            else if (e == 'r') text.append('\r');
            else if (e == 'b') text.append('\b');
            else if (e == 'f') text.append('\f');
            else if (e == 'u') {
                if (i + 4 > end) return null;
                int code = 0;
                for (int k = 0; k < 4; k++) {
                    int digit = Character.digit((char) b[i + k], 16);
                    if (digit < 0) return null;
                    code = (code << 4) | digit;
                }
                text.append((char) code);
                i += 4;
            } else {
                return null;
            }
        }
        return UTF8String.fromString(text.toString());
    }

    // ASCII bytes b[start, end) as Spark's string value, copied (the input array is not ours to keep).
    private static UTF8String utf8(byte[] b, int start, int end) {
        return UTF8String.fromBytes(Arrays.copyOfRange(b, start, end));
    }

    private String text(JsonParser parser, JsonToken value) throws IOException {
        if (value == JsonToken.VALUE_STRING) return parser.getText();
        if (value == JsonToken.VALUE_NULL) return null;
        if (value == JsonToken.VALUE_NUMBER_INT) {
            JsonParser.NumberType type = parser.getNumberType();
            if (type == JsonParser.NumberType.INT || type == JsonParser.NumberType.LONG) {
                return Long.toString(parser.getLongValue());
            }
        }
        ByteArrayOutputStream copy = new ByteArrayOutputStream();
        JsonGenerator generator = factory.createGenerator(copy, JsonEncoding.UTF8);
        try {
            generator.copyCurrentStructure(parser);
        } finally {
            generator.close();
        }
        return new String(copy.toByteArray(), StandardCharsets.UTF_8);
    }
}
